#!/usr/bin/env bash
# Runs the public HTTP caching test suite (http-tests/cache-tests, npm package
# http-cache-tests@0.4.5, the suite behind cache-tests.fyi) through meshcache as a
# forward proxy with `cache.shared = true`, and prints `passed N of 350` with every
# failure. Needs node and npm (and the npm registry, so it is not part of CI).
#
#   benches/conformance/run.sh                 # the whole suite
#   benches/conformance/run.sh ID1,ID2 [1]     # some tests; a second argument 1 dumps them
#
# Everything lives under target/conformance/: the suite, its dependencies, the proxy's
# configuration and data, the logs (origin.log, proxy.log) and results.json. The proxy
# is target/release/meshcache (built first); MESHCACHE=path uses another binary.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
work="$root/target/conformance"
suite_version=0.4.5
mkdir -p "$work"

command -v node >/dev/null || { echo "conformance: node is needed" >&2; exit 2; }
command -v npm >/dev/null || { echo "conformance: npm is needed" >&2; exit 2; }

suite="$work/http-cache-tests-$suite_version"
if [ ! -f "$suite/.installed" ]; then
  rm -rf "$suite" && mkdir -p "$suite"
  (cd "$work" && npm pack --silent "http-cache-tests@$suite_version" >/dev/null)
  tar -xzf "$work/http-cache-tests-$suite_version.tgz" -C "$suite" --strip-components=1
  (cd "$suite" && npm install --omit=dev --no-audit --no-fund --silent >/dev/null)
  touch "$suite/.installed"
fi
cp "$here/run-proxy.mjs" "$suite/run-proxy.mjs"

bin="${MESHCACHE:-$root/target/release/meshcache}"
if [ -z "${MESHCACHE:-}" ]; then
  (cd "$root" && cargo build --release --quiet)
fi

# Two free loopback ports, one for the suite's origin server and one for the proxy.
read -r origin_port proxy_port < <(node -e '
  const net = require("net"); const ports = [];
  const take = () => { const s = net.createServer().listen(0, "127.0.0.1", () => {
    ports.push(s.address().port); s.close(() => ports.length < 2 ? take() : console.log(ports.join(" "))) }) };
  take()')

data="$work/data"
rm -rf "$data"
cat > "$work/meshcache.toml" <<TOML
[listen]
forward = "127.0.0.1:$proxy_port"
[data]
dir = "$data"
[cache]
shared = true          # how the suite judges proxies: RFC 9111's shared-cache rules
[origin]
allow = ["127.0.0.0/8"] # the suite's origin is on loopback
[mesh]
enabled = false
open = false
mdns = false
[log]
level = "warn"
access = false
TOML

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

(cd "$suite" && exec env npm_package_config_protocol=http npm_package_config_port="$origin_port" \
  npm_package_config_pidfile="$work/origin.pid" node server/server.mjs >"$work/origin.log" 2>&1) &
pids+=($!)
"$bin" run --config "$work/meshcache.toml" >"$work/proxy.log" 2>&1 &
pids+=($!)

origin="http://127.0.0.1:$origin_port"
proxy="http://127.0.0.1:$proxy_port"
ready=
for _ in $(seq 100); do
  if node -e '
    const http = require("http"); const [o, p] = process.argv.slice(1); const pu = new URL(p);
    const get = (opts) => new Promise((ok, no) => http.get(opts, r => { r.resume(); ok() }).on("error", no));
    get(o + "/").then(() => get({ host: pu.hostname, port: pu.port, path: o + "/" }))
      .then(() => process.exit(0), () => process.exit(1))' "$origin" "$proxy" 2>/dev/null; then
    ready=1; break
  fi
  sleep 0.2
done
[ -n "$ready" ] || { echo "conformance: origin or proxy did not start (see $work/*.log)" >&2; exit 1; }

echo "http-cache-tests@$suite_version through $bin (cache.shared = true)"
(cd "$suite" && PROXY="$proxy" BASE="$origin" OUT="$work/results.json" ONLY="${1:-}" DUMP="${2:-}" \
  node run-proxy.mjs)
