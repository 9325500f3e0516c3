-- tests/unit/scripts/admission/tokens.lua: the signed purchase tokens and the waiting room's MACs
-- (scripts/admission/tokens.lua) of a server without a token secret (the shipped config's default): nothing verifies,
-- and nothing raises. A poll of the waiting room checks its ticket's MAC with mac_ok before anything else; raising
-- there answered GET /queue/status?ticket=q1~d~0~1~a~b~<64 hex digits> with a 500 and a Lua error in the log
-- instead of 403 bad_ticket.
config = {} -- no token_secret
json = { null = setmetatable({}, { __name = "json.null" }) }
now = function() return 1700000000000 end
crypto = {
    -- as the binding's: a key that is not a string is a misuse (luaL_checklstring raises)
    hmac_sha256 = function(key, msg)
        assert(type(key) == "string" and type(msg) == "string", "bad argument #1 to 'hmac_sha256' (string expected)")
        return string.rep("0", 64)
    end,
    equal = function(a, b) return a == b end,
}
local tokens = require "admission.tokens"

test("without a secret: not configured", function()
    eq(tokens.configured(), false)
end)

test("without a secret: no MAC is good, and checking one raises nothing", function()
    eq(tokens.mac_ok(string.rep("0", 64), "q1|d|0|1|a|b"), false)
    eq(tokens.mac_ok("", ""), false)
end)

test("without a secret: no purchase token verifies", function()
    eq({ tokens.verify("v1.1800000000000." .. string.rep("0", 64), "a", "b") }, { false, "malformed" })
    eq({ tokens.verify(nil, "a", "b") }, { false, "missing" })
end)
