-- Where the test consumer persists messages.
local M = {}

local path = os.getenv("SK_KAFKA_SINK_FILE") or "/tmp/seckilld-kafka-sink.txt"

-- "auto" (the default): MySQL when the mysql binding is present and a server is configured, else the file
function M.kind()
    local kind = os.getenv("SK_KAFKA_SINK") or "auto"
    if kind == "auto" then
        kind = (mysql ~= nil and type(mysql.query) == "function" and os.getenv("SECKILLD_MYSQL")) and "mysql" or "file"
    end
    return kind
end

local kind = M.kind()

function M.insert(m)
    if kind == "mysql" then
        local res, err = mysql.query("INSERT IGNORE INTO kafka_rows (v, p, o) VALUES (?, ?, ?)", m.value, m.partition,
            m.offset)
        if not res then
            return nil, "mysql: " .. tostring(err)
        end
        return true
    end
    -- a file append is a blocking write, acceptable for a test sink only
    local f, err = io.open(path, "a")
    if not f then
        return nil, err
    end
    f:write(m.value, "\t", m.partition, "\t", m.offset, "\n")
    f:close()
    return true
end

return M
