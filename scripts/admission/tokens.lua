-- admission/tokens.lua: signed purchase tokens (API.md "Admission"). A token says "this user may buy this item until
-- this time", signed by the server, so a buy checks it without a Redis round trip and a bot cannot mint one.
--
--   tokens.configured()                 → whether a secret is set (config.token_secret / SECKILLD_TOKEN_SECRET)
--   tokens.issue(item, user, ttl_ms)    → token, expires_at (ms)
--   tokens.issue_until(item, user, at)  → the token that expires at `at` (ms): the same on every call (a waiting
--                                         room's pass, queue/)
--   tokens.mac(text) / tokens.mac_ok(mac, text)  the server's HMAC of other signed things (queue/'s tickets), with
--                                         the same secret and rotation
--   tokens.verify(token, item, user)    → true, or false and why ("missing", "malformed", "expired", "forged")
--
-- The token is "v1.<expires_at ms>.<HMAC-SHA256 hex>" over "v1|item|user|expires_at" (OpenSSL's HMAC: crypto.*),
-- compared in constant time. Rotation: a token signed with config.token_secret_previous is accepted until
-- config.token_secret_previous_until (ms since the epoch), so tokens issued just before a rotation stay good.
local M = {}

local secret = config.token_secret
local previous = config.token_secret_previous
local previous_until = config.token_secret_previous_until
local MIN_SECRET = 16

if secret ~= nil and (type(secret) ~= "string" or #secret < MIN_SECRET) then
    error("config.token_secret must be a string of at least " .. MIN_SECRET .. " characters")
end
if previous ~= nil then
    if type(previous) ~= "string" or #previous < MIN_SECRET then
        error("config.token_secret_previous must be a string of at least " .. MIN_SECRET .. " characters")
    end
    if math.type(previous_until) ~= "integer" then
        error("config.token_secret_previous needs token_secret_previous_until: the end of the overlap, in ms since the "
            .. "epoch")
    end
    if secret == nil then
        error("config.token_secret_previous is set but token_secret is not")
    end
end

function M.configured()
    return secret ~= nil
end

local function sign(key, item, user, expires_at)
    return crypto.hmac_sha256(key, "v1|" .. item .. "|" .. user .. "|" .. expires_at)
end

function M.issue_until(item, user, expires_at)
    return "v1." .. expires_at .. "." .. sign(secret, item, user, expires_at), expires_at
end

function M.issue(item, user, ttl_ms)
    return M.issue_until(item, user, math.floor(now()) + ttl_ms)
end

function M.mac(text)
    return crypto.hmac_sha256(secret, text)
end

function M.mac_ok(mac, text)
    if secret == nil then
        return false -- without a secret nothing was signed here: no MAC is good (a poll's ticket is then a 403)
    end
    if crypto.equal(mac, crypto.hmac_sha256(secret, text)) then
        return true
    end
    return previous ~= nil and now() < previous_until and crypto.equal(mac, crypto.hmac_sha256(previous, text))
end

function M.verify(token, item, user)
    if token == nil or token == json.null then
        return false, "missing"
    end
    if type(token) ~= "string" or secret == nil then
        return false, "malformed"
    end
    local expires, mac = token:match("^v1%.(%d+)%.(%x+)$")
    if expires == nil or #mac ~= 64 or #expires > 16 then
        return false, "malformed"
    end
    local t = now()
    if math.tointeger(tonumber(expires)) <= t then
        return false, "expired"
    end
    if crypto.equal(mac, sign(secret, item, user, expires)) then
        return true
    end
    if previous ~= nil and t < previous_until and crypto.equal(mac, sign(previous, item, user, expires)) then
        return true
    end
    return false, "forged"
end

return M
