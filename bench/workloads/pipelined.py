"""pipelined: 16 requests per write on each of 64 keep-alive connections.

Shows the batching design: decode all, encode all, write once.
wrk counts every response; its latency is per batch of 16.
"""
from benchlib import WrkWorkload

PIPELINE_LUA = r"""
-- TechEmpower-style pipelining: one write carries `depth` requests
init = function(args)
  local depth = tonumber(args[1]) or 16
  local r = {}
  for i = 1, depth do r[i] = wrk.format() end
  req = table.concat(r)
end
request = function() return req end
"""

WORKLOAD = WrkWorkload(
    name="pipelined",
    description="GET / pipelined ×16, `wrk -t1 -c64 -s pipeline.lua -- 16`",
    connections=64,
    lua=PIPELINE_LUA,
    lua_args=["16"],
    servers=["skitai-uring", "skitai-epoll", "nginx", "hyper", "may-minihttp", "monoio-raw-uring", "monoio-raw-epoll"],
)
