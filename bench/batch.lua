-- wrk script: POST an NDJSON body of 1,000 records of 100 bytes each ({"value":"..."} per line) to the path
-- given on the command line (the batch form of POST /topics/{t}/messages).
local line = '{"value":"' .. string.rep("b", 100) .. '"}\n'
wrk.method = "POST"
wrk.body = string.rep(line, 1000)
wrk.headers["Content-Type"] = "application/x-ndjson"
