// Runs the http-cache-tests suite (http-tests/cache-tests) through a forward proxy.
//
//   PROXY=http://127.0.0.1:PORT  the proxy under test
//   BASE=http://127.0.0.1:8000   the suite's own origin server (server/server.mjs)
//   ONLY=id1,id2                 run only these tests (DUMP=1 prints every exchange)
//   OUT=results.json             where the per-test results go
//
// The client is the suite's own (node-fetch 2, as cli.mjs uses), given an http.Agent that
// connects to the proxy and sends the request target in absolute form (RFC 9112 3.2.2).
// undici's fetch is not used: following the Fetch standard, it turns a request carrying
// If-None-Match or If-Modified-Since into cache mode "no-store", which adds
// `Cache-Control: no-cache` and `Pragma: no-cache`, so every conditional test would ask
// the proxy to go to the origin.
import http from 'http'
import fs from 'fs'
import fetch from 'node-fetch'
import { runTests, getResults } from './client/runner.mjs'
import tests from './tests/index.mjs'
import surrogate from './tests/surrogate-control.mjs'

tests.push(surrogate)

const proxy = new URL(process.env.PROXY || 'http://127.0.0.1:3128')
const base = process.env.BASE || 'http://127.0.0.1:8000'

class ForwardProxyAgent extends http.Agent {
  addRequest (req, options) {
    const target = `http://${options.host}:${options.port || 80}${req.path}`
    req.path = target
    super.addRequest(req, { ...options, host: proxy.hostname, hostname: proxy.hostname, port: proxy.port })
  }
}
const agent = new ForwardProxyAgent({ keepAlive: true })
const proxiedFetch = (url, init) => fetch(url, { ...init, agent })

let run = tests
const only = process.env.ONLY
if (only) {
  const ids = only.split(',')
  run = tests
    .map(s => ({ ...s, tests: s.tests.filter(t => ids.includes(t.id)) }))
    .filter(s => s.tests.length)
  run.forEach(s => s.tests.forEach(t => { t.dump = !!process.env.DUMP }))
}
await runTests(run, proxiedFetch, false, base)
const results = getResults()
fs.writeFileSync(process.env.OUT || 'results.json', JSON.stringify(results, null, 2))

const kinds = {}
tests.forEach(s => s.tests.forEach(t => { kinds[t.id] = t.kind || 'required' }))
let passed = 0
const byKind = {}
const fails = []
for (const [id, r] of Object.entries(results)) {
  if (r === true) {
    passed++
    byKind[kinds[id]] = (byKind[kinds[id]] || 0) + 1
  } else {
    fails.push([kinds[id], id, JSON.stringify(r).slice(0, 200)])
  }
}
console.log(`passed ${passed} of ${Object.keys(results).length}`, byKind)
fails.sort().forEach(f => console.log(f.join('  ')))
agent.destroy()
