-- wrk script: buys of an item that is sold out (ITEM), each from a new user
local item = os.getenv("ITEM") or "bench"
local n = 0
local headers = { ["Content-Type"] = "application/json" }
function request()
    n = n + 1
    return wrk.format("POST", "/seckill/add", headers, string.format('{"item_id":"%s","user_id":"so-%d"}', item, n))
end
