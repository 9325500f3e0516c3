-- tests/unit/scripts.lua: what every Lua unit test of the scripts sees (tests/unit/scripts.c loads it first, in the
-- test file's own state), in the spirit of tests/unit/test.h:
--
--   test(name, fn)          runs fn; an error in it fails that case ("not ok NAME: message" and a traceback), and
--                           the file goes on with its next case
--   eq(got, want[, what])   raises unless got equals want (tables compared deeply), saying both
--
-- Returns a function that gives the file's counts (passed, failed) to the runner.
local passed, failed = 0, 0

local function same(a, b)
    if a == b then
        return true
    end
    if type(a) ~= "table" or type(b) ~= "table" then
        return false
    end
    for k, v in pairs(a) do
        if not same(v, b[k]) then
            return false
        end
    end
    for k in pairs(b) do
        if a[k] == nil then
            return false
        end
    end
    return true
end

local function show(v)
    if type(v) == "string" then
        return string.format("%q", v)
    elseif type(v) ~= "table" then
        return tostring(v)
    end
    local keys, out = {}, {}
    for k in pairs(v) do
        keys[#keys + 1] = k
    end
    table.sort(keys, function(x, y)
        return tostring(x) < tostring(y)
    end)
    for _, k in ipairs(keys) do
        out[#out + 1] = tostring(k) .. " = " .. show(v[k])
    end
    return "{ " .. table.concat(out, ", ") .. " }"
end

function eq(got, want, what)
    if not same(got, want) then
        error((what and what .. ": " or "") .. "got " .. show(got) .. ", want " .. show(want), 2)
    end
end

function test(name, fn)
    local ok, err = xpcall(fn, debug.traceback)
    if ok then
        passed = passed + 1
    else
        failed = failed + 1
        print("not ok " .. name .. ": " .. tostring(err))
    end
end

return function()
    return passed, failed
end
