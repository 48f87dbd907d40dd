-- wrk script: POST a text body to the path given on the command line: 100 bytes, or KA_VALUE_BYTES.
wrk.method = "POST"
wrk.body = string.rep("m", tonumber(os.getenv("KA_VALUE_BYTES") or "100"))
wrk.headers["Content-Type"] = "text/plain"
