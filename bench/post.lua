-- wrk script: POST a 100-byte text body to the path given on the command line.
wrk.method = "POST"
wrk.body = string.rep("m", 100)
wrk.headers["Content-Type"] = "text/plain"
