-- VidPref annotators for wrk (bench/annotate_load.py writes the environment it reads).
--
-- One connection per wrk thread (-t N -c N), so a thread's state is one annotator's: its token and its lease.
-- VIDPREF_MODE=one: each judgment's answer carries the next lease (one request per judgment);
-- VIDPREF_MODE=two: POST /assignments/next/, then the judgment (the path before one round trip existed).
-- No think time: this is the throughput test (bench/annotate_load.py's realistic phase has people who think).

local tokens, threads, count = {}, {}, 0

function setup(thread)
   if #tokens == 0 then
      for line in io.lines(os.getenv("VIDPREF_TOKENS")) do
         tokens[#tokens + 1] = line
      end
   end
   count = count + 1
   thread:set("token", tokens[(count - 1) % #tokens + 1])
   thread:set("mode", os.getenv("VIDPREF_MODE") or "one")
   thread:set("seed", count)
   threads[#threads + 1] = thread
end

local lease, pending, headers
local choices = { "left", "right", "tie" }
judged, repeats, empty, refused = 0, 0, 0, 0

function init(args)
   math.randomseed(seed * 7919)
   headers = { ["Authorization"] = "Token " .. token, ["Content-Type"] = "application/json" }
end

function request()
   if lease then
      pending = "judgment"
      local body = string.format('{"vq":"%s","mq":"%s","ta":"%s"}', choices[math.random(3)],
         choices[math.random(3)], choices[math.random(3)])
      return wrk.format("POST", "/api/v1/assignments/" .. lease .. "/judgment/", headers, body)
   end
   pending = "next"
   return wrk.format("POST", "/api/v1/assignments/next/", headers, "")
end

function response(status, _, body)
   if pending == "judgment" then
      if status == 201 then
         judged = judged + 1
      elseif status == 200 then
         repeats = repeats + 1
      else
         refused = refused + 1
      end
      lease = nil
      if mode == "one" and (status == 201 or status == 200) then
         lease = body:match('"next":{"id":(%d+)')
      end
   else
      lease = nil
      if status == 200 then
         lease = body:match('^{"id":(%d+)')
      elseif status == 204 then
         empty = empty + 1
      else
         refused = refused + 1
      end
   end
end

function done(summary, latency, requests)
   local j, r, e, x = 0, 0, 0, 0
   for _, t in ipairs(threads) do
      j = j + t:get("judged")
      r = r + t:get("repeats")
      e = e + t:get("empty")
      x = x + t:get("refused")
   end
   local errors = summary.errors
   io.write(string.format(
      'VIDPREF_RESULT {"judgments": %d, "repeats": %d, "nothing_left": %d, "refused": %d, "requests": %d, ' ..
      '"duration_s": %.3f, "p50_ms": %.3f, "p90_ms": %.3f, "p99_ms": %.3f, "max_ms": %.3f, ' ..
      '"socket_errors": %d, "timeouts": %d, "non_2xx": %d}\n',
      j, r, e, x, summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3,
      latency:percentile(90) / 1e3, latency:percentile(99) / 1e3, latency.max / 1e3,
      errors.connect + errors.read + errors.write, errors.timeout, errors.status))
end
