local M = {}
M.answer = 42
return M
