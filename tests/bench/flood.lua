-- wrk script: one user buying as fast as wrk can: past its rate limit every answer is 429 (no Redis touched)
local item = os.getenv("ITEM") or "bench"
local headers = { ["Content-Type"] = "application/json" }
local body = string.format('{"item_id":"%s","user_id":"flooder"}', item)
function request()
    return wrk.format("POST", "/seckill/add", headers, body)
end
