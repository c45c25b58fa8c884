local n, bad = 0, 0
while true do
  local f = load("return math.floor(" .. (n % 1000) .. " / 7) + string.len('abc')")
  if f() ~= math.floor((n % 1000) / 7) + 3 then bad = bad + 1 end
  n = n + 1
  if n % 50000 == 0 then
    -- CVE-2022-28805: a global read through a constant _ENV; 5.4.4 compiles it wrongly.
    local poc = load([[local _ENV <const> = "abc"; return len]])
    print(string.format("compiled=%d wrong=%d env_const_global=%s", n, bad, tostring(poc and poc() == string.len)))
    io.stdout:flush()
  end
end
