-- every 20 ms, a run that lasts 30 ms: runs never overlap (the next one is scheduled when the last one ends), and
-- they run on worker 0 only, so the process-wide count of running ticks never exceeds 1
app.every("tick", 20, function()
    if shared.incr("tasks:running", 1, 0) > 1 then
        shared.incr("tasks:overlaps", 1, 0)
    end
    shared.incr("tasks:tick", 1, 0)
    sleep(30)
    shared.incr("tasks:running", -1, 0)
end)

-- raises every time; the task keeps its schedule
app.every("boom", 30, function()
    shared.incr("tasks:boom", 1, 0)
    error("task boom")
end)

-- tasks may spawn
app.every("spawner", 50, function()
    spawn(function(n)
        shared.incr("tasks:spawned_by_task", n, 0)
    end, 1)
end)

return {}
