#!/usr/bin/env bash
# Loopback benchmark of s2ds against iperf3 direct, HAProxy (forced splice),
# Nginx stream, socat and a Stunnel PSK pair, in one run, with the floors:
# a minimal splice loop (bench/splice_floor.c) for plain, and for the TLS
# pairs AES-128-GCM seal+open of every byte (examples/aead_floor.rs, aws-lc)
# plus that splice floor for each of the pair's two relays; and, for a TLS
# pair in userspace (no kernel TLS), that plus the four copies of every byte
# between sockets and userspace (two per relay; a plain memcpy's cost).
#
#   s2ds-image/bench/bench.sh            # 10 s per case, 1 and 8 streams, 3 rounds
#   DURATION=5 STREAMS="1 4 8" ROUNDS=5 s2ds-image/bench/bench.sh
#   ONLY='direct|s2ds' BUF=1048576 s2ds-image/bench/bench.sh   # subset, s2ds bufferBytes
#
# Installs its Debian packages if missing (needs root + apt), builds s2ds
# --release, prints a table: Gbit/s (iperf3 receiver side), relay CPU
# seconds per GiB (utime+stime from /proc of the relay processes and their
# children), ratios, distance from the floor; then s2ds RSS idle / with 256
# connections and the connection setup rate (plain and TLS pair). The s2ds
# TLS pair runs twice: on our record layer (s2ds-tls-pair) and on rustls's
# (s2ds-tls-rustls-pair, tls.recordLayer: rustls).
#
# On a shared machine one 10 s sample per case varies by 30% from run to
# run, so every case is measured ROUNDS times, interleaved (round r runs
# the cases in an order rotated by r, so no case always follows the same
# one), and the table shows the median of each case (min-max alongside).
set -euo pipefail

DURATION=${DURATION:-10}
STREAMS=${STREAMS:-"1 8"}
ROUNDS=${ROUNDS:-3}
HERE=$(cd "$(dirname "$0")" && pwd)
WS=$(cd "$HERE/../.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$WS/target}
BUF=${BUF:-262144}

need=()
command -v iperf3 >/dev/null || need+=(iperf3)
command -v haproxy >/dev/null || need+=(haproxy)
command -v nginx >/dev/null || need+=(nginx)
[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || need+=(libnginx-mod-stream)
command -v stunnel4 >/dev/null || command -v stunnel >/dev/null || need+=(stunnel4)
command -v socat >/dev/null || need+=(socat)
command -v openssl >/dev/null || need+=(openssl)
command -v cc >/dev/null || need+=(gcc)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
STUNNEL=$(command -v stunnel4 || command -v stunnel)

echo "building s2ds --release ..." >&2
(cd "$WS" && cargo build --release -q -p s2ds --bin s2ds --example loadgen --example aead_floor)
S2DS=$CARGO_TARGET_DIR/release/s2ds
LOADGEN=$CARGO_TARGET_DIR/release/examples/loadgen
AEAD_FLOOR=$CARGO_TARGET_DIR/release/examples/aead_floor

W=$(mktemp -d /tmp/s2ds-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] && echo "kept $W" >&2 || rm -rf "$W"
}
trap cleanup EXIT
cc -O2 -pthread -o "$W/splice_floor" "$HERE/splice_floor.c"

start() { # name cmd... ; runs in background, records pid in $W/name.pid
  local name=$1; shift
  "$@" >"$W/$name.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  echo "$pid" >"$W/$name.pid"
}

wait_port() { # port
  for _ in $(seq 1 200); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "port $1 never opened" >&2
  return 1
}

# CPU ticks of a process tree: utime+stime of the root and of every live
# descendant, plus cutime+cstime of the root (children it has reaped).
cpu_ticks() {
  python3 - "$@" <<'PY'
import os, sys
roots = [int(p) for p in sys.argv[1:]]
procs = {}
for d in os.listdir('/proc'):
    if d.isdigit():
        try:
            s = open(f'/proc/{d}/stat').read()
        except OSError:
            continue
        f = s[s.rindex(')') + 2:].split()
        procs[int(d)] = (int(f[1]), int(f[11]) + int(f[12]), int(f[13]) + int(f[14]))
total = 0
for r in roots:
    if r not in procs:
        continue
    total += procs[r][1] + procs[r][2]
    todo = [r]
    while todo:
        p = todo.pop()
        for c, (pp, t, _) in procs.items():
            if pp == p:
                total += t
                todo.append(c)
print(total)
PY
}

# --- certificates / keys -----------------------------------------------------
for side in client server; do
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=s2ds-bench-$side" -keyout "$W/$side.key" -out "$W/$side.crt" 2>/dev/null
done
echo "bench:0123456789abcdef0123456789abcdef" >"$W/psk.txt"
chmod 600 "$W/psk.txt"

# --- configs -----------------------------------------------------------------
cat >"$W/s2ds-plain.yaml" <<EOF
streamId: bench-plain
mode: plain
listeners: [127.0.0.1:6001]
targets: [127.0.0.1:5201]
metricsAddress: 127.0.0.1:9101
bufferBytes: $BUF
EOF
cat >"$W/s2ds-tls-server.yaml" <<EOF
streamId: bench-tls
mode: tls-server
listeners: [127.0.0.1:6006]
targets: [127.0.0.1:5201]
metricsAddress: 127.0.0.1:9103
bufferBytes: $BUF
tls: {certFile: $W/server.crt, keyFile: $W/server.key, peerCertFile: $W/client.crt}
EOF
cat >"$W/s2ds-tls-client.yaml" <<EOF
streamId: bench-tls
mode: tls-client
listeners: [127.0.0.1:6005]
targets: [127.0.0.1:6006]
metricsAddress: 127.0.0.1:9102
bufferBytes: $BUF
tls: {certFile: $W/client.crt, keyFile: $W/client.key, peerCertFile: $W/server.crt}
EOF
# The same pair on rustls's record layer.
sed -e 's/6006/6014/; s/9103/9105/; s/peerCertFile/recordLayer: rustls, peerCertFile/' \
  "$W/s2ds-tls-server.yaml" >"$W/s2ds-rl-server.yaml"
sed -e 's/6005/6013/; s/6006/6014/; s/9102/9104/; s/peerCertFile/recordLayer: rustls, peerCertFile/' \
  "$W/s2ds-tls-client.yaml" >"$W/s2ds-rl-client.yaml"
cat >"$W/haproxy.cfg" <<EOF
global
  nbthread 2
  maxconn 4096
defaults
  mode tcp
  timeout connect 5s
  timeout client 1m
  timeout server 1m
  option splice-request
  option splice-response
frontend f
  bind 127.0.0.1:6002
  default_backend b
backend b
  server s1 127.0.0.1:5201
EOF
mkdir -p "$W/nginx"
cat >"$W/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
daemon off;
worker_processes auto;
pid $W/nginx/nginx.pid;
error_log $W/nginx/error.log warn;
events { worker_connections 4096; }
stream {
  server {
    listen 127.0.0.1:6003;
    proxy_pass 127.0.0.1:5201;
    proxy_buffer_size 256k;
    tcp_nodelay on;
  }
}
EOF
stunnel_conf() { # name client(yes/no) accept connect
  cat >"$W/stunnel-$1.conf" <<EOF
foreground = yes
pid =
output = $W/stunnel-$1.out
socket = l:TCP_NODELAY=1
socket = r:TCP_NODELAY=1
[s]
client = $2
accept = 127.0.0.1:$3
connect = 127.0.0.1:$4
sslVersionMax = TLSv1.2
sslVersionMin = TLSv1.2
ciphers = PSK-AES128-GCM-SHA256
PSKsecrets = $W/psk.txt
EOF
}
stunnel_conf server no 6008 5201
stunnel_conf client yes 6007 6008

# --- start everything ----------------------------------------------------------
start iperf3 iperf3 -s -B 127.0.0.1 -p 5201
start s2ds-plain "$S2DS" --config "$W/s2ds-plain.yaml"
start s2ds-tls-server "$S2DS" --config "$W/s2ds-tls-server.yaml"
start s2ds-tls-client "$S2DS" --config "$W/s2ds-tls-client.yaml"
start s2ds-rl-server "$S2DS" --config "$W/s2ds-rl-server.yaml"
start s2ds-rl-client "$S2DS" --config "$W/s2ds-rl-client.yaml"
start splice-floor "$W/splice_floor" 6009 5201 "$BUF"
start haproxy haproxy -db -f "$W/haproxy.cfg"
start nginx nginx -c "$W/nginx.conf" -p "$W/nginx"
start socat socat -b 262144 TCP-LISTEN:6004,bind=127.0.0.1,fork,reuseaddr TCP:127.0.0.1:5201
start stunnel-server "$STUNNEL" "$W/stunnel-server.conf"
start stunnel-client "$STUNNEL" "$W/stunnel-client.conf"
for p in 5201 6001 6002 6003 6004 6005 6006 6007 6008 6009 6013 6014; do wait_port $p; done
for side in client server; do
  grep -q 'recordLayer: rustls' "$W/s2ds-rl-$side.log" ||
    { echo "s2ds-rl-$side does not say it runs on rustls's record layer" >&2; exit 1; }
done

pid() { cat "$W/$1.pid"; }

# name port relay-pid-names...
CASES=(
  "direct 5201"
  "splice-floor 6009 splice-floor"
  "s2ds-plain 6001 s2ds-plain"
  "haproxy-splice 6002 haproxy"
  "nginx-stream 6003 nginx"
  "socat 6004 socat"
  "s2ds-tls-pair 6005 s2ds-tls-client s2ds-tls-server"
  "s2ds-tls-rustls-pair 6013 s2ds-rl-client s2ds-rl-server"
  "stunnel-psk-pair 6007 stunnel-client stunnel-server"
)
TICK=$(getconf CLK_TCK)
echo "case streams gbps cpu_s_per_gib" >"$W/results.txt"
NCASES=${#CASES[@]}
for n in $STREAMS; do
  for round in $(seq 1 "$ROUNDS"); do
    # The cipher's floor: CPU s/GiB of AES-128-GCM seal and open, and of one copy (no sockets).
    read -r _ seal _ open _ copy <<<"$("$AEAD_FLOOR" 1)"
    echo "aead-floor $n 0 $(python3 -c "print(f'{$seal + $open:.3f}')")" >>"$W/results.txt"
    echo "copy-floor $n 0 $copy" >>"$W/results.txt"
    echo "  round $round: seal $seal, open $open, copy $copy" >&2
    for k in $(seq 0 $((NCASES - 1))); do
      c=${CASES[$(((k + round - 1) % NCASES))]}
      read -r name port relays <<<"$c"
      if [ -n "${ONLY:-}" ] && ! [[ $name =~ $ONLY ]]; then continue; fi
      pids=()
      for r in $relays; do pids+=("$(pid "$r")"); done
      before=0; [ ${#pids[@]} -gt 0 ] && before=$(cpu_ticks "${pids[@]}")
      iperf3 -c 127.0.0.1 -p "$port" -t "$DURATION" -P "$n" -J >"$W/iperf-$name-$n.json" 2>"$W/iperf-$name-$n.err" || true
      sleep 0.5 # let forked relays (socat) exit and be reaped before reading CPU
      after=0; [ ${#pids[@]} -gt 0 ] && after=$(cpu_ticks "${pids[@]}")
      python3 - "$W/iperf-$name-$n.json" "$name" "$n" "$before" "$after" "$TICK" >>"$W/results.txt" <<'PY'
import json, sys
path, name, n, before, after, tick = sys.argv[1:]
try:
    s = json.load(open(path))["end"]["sum_received"]
    gbps, gib = s["bits_per_second"] / 1e9, s["bytes"] / 2**30
except Exception:
    gbps, gib = 0.0, 0.0
cpu = (int(after) - int(before)) / int(tick)
per = cpu / gib if gib > 0 and name != "direct" else float("nan")
print(name, n, f"{gbps:.2f}", f"{per:.3f}")
PY
      echo "  round $round: $(tail -1 "$W/results.txt")" >&2
    done
  done
done

# --- RSS and connection setup rate ----------------------------------------------
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
# Fresh s2ds processes for RSS / setup (targets: a trivial sink).
start sink "$LOADGEN" sink 127.0.0.1:7000
sed -e 's/6001/6011/; s/5201/7000/; s/9101/9111/' "$W/s2ds-plain.yaml" >"$W/rss-plain.yaml"
sed -e 's/6006/6016/; s/5201/7000/; s/9103/9113/' "$W/s2ds-tls-server.yaml" >"$W/rss-tls-server.yaml"
sed -e 's/6005/6015/; s/6006/6016/; s/9102/9112/' "$W/s2ds-tls-client.yaml" >"$W/rss-tls-client.yaml"
start rss-plain "$S2DS" --config "$W/rss-plain.yaml"
start rss-tls-server "$S2DS" --config "$W/rss-tls-server.yaml"
start rss-tls-client "$S2DS" --config "$W/rss-tls-client.yaml"
for p in 7000 6011 6015 6016; do wait_port $p; done
RSS_IDLE=$(rss "$(pid rss-plain)")
mkfifo "$W/hold.in"
"$LOADGEN" hold 127.0.0.1:6011 256 <"$W/hold.in" >"$W/hold.out" &
HOLD=$!
exec 9>"$W/hold.in"
for _ in $(seq 1 200); do grep -q held "$W/hold.out" 2>/dev/null && break; sleep 0.05; done
RSS_256=$(rss "$(pid rss-plain)")
exec 9>&-
wait "$HOLD" || true
read -r CPS_PLAIN ERR_PLAIN <<<"$("$LOADGEN" connrate 127.0.0.1:6011 5 16)"
read -r CPS_TLS ERR_TLS <<<"$("$LOADGEN" connrate 127.0.0.1:6015 5 16)"

# --- table -----------------------------------------------------------------------
# CPU s/GiB floors: plain = the splice loop's; TLS = AES-128-GCM seal+open of
# every byte + the splice loop's for each of the pair's two relays (each
# relay still moves every byte from one socket to another); userspace TLS =
# that + 4 copies. floor/ is the case's CPU per GiB divided by its path's
# floor. The splice loop's figure is the least it reached at any stream
# count (one thread per direction: with 8 streams its 16 threads switch more
# than an event loop, and it is no floor there).
python3 - "$W/results.txt" <<PY
import sys, math, statistics
rows = [l.split() for l in open(sys.argv[1]).read().splitlines()[1:]]
samples = {}
names = []
for name, n, g, c in rows:
    samples.setdefault((name, int(n)), []).append((float(g), float(c)))
    if name not in names: names.append(name)
def med(xs):
    xs = [x for x in xs if not math.isnan(x)]
    return statistics.median(xs) if xs else float('nan')
res = {k: (med([g for g, _ in v]), med([c for _, c in v])) for k, v in samples.items()}
spread = {k: (min(g for g, _ in v), max(g for g, _ in v)) for k, v in samples.items()}
streams = sorted({k[1] for k in res})
def get(name, n):
    return res.get((name, n), (float('nan'), float('nan')))
def ratio(a, b):
    return a / b if b and b > 0 and not math.isnan(a) and not math.isnan(b) else float('nan')
TLS = ('s2ds-tls-pair', 's2ds-tls-rustls-pair', 'stunnel-psk-pair')
SPLICE = min([get('splice-floor', n)[1] for n in streams if not math.isnan(get('splice-floor', n)[1])] or [float('nan')])
def floor(name, n):
    if name in TLS or name == 'tls-floor':
        return get('aead-floor', n)[1] + 2 * SPLICE
    if name == 'tls-floor-userspace':
        return floor('tls-floor', n) + 4 * get('copy-floor', n)[1]
    return float('nan') if name in ('direct', 'aead-floor', 'copy-floor') else SPLICE
print(f"\nsplice floor (least over stream counts): {SPLICE:.3f} CPU s/GiB")
print(f"loopback, {$DURATION} s per case, median of $ROUNDS interleaved rounds, $(nproc) cores, $(uname -r), buffer $BUF")
hdr = f"{'case':20} {'streams':>7} {'Gbit/s':>8} {'(min-max)':>13} {'CPU s/GiB':>10} {'floor/':>7} {'s2ds/this':>10}"
print(hdr); print('-' * len(hdr))
for n in streams:
    for name in names + ['tls-floor', 'tls-floor-userspace']:
        if name.startswith('tls-floor'):
            g, c, span, r = float('nan'), floor(name, n), '', float('nan')
        elif (name, n) in res:
            g, c = res[(name, n)]
            lo, hi = spread[(name, n)]
            span = f'({lo:.1f}-{hi:.1f})'
            ref = 's2ds-tls-pair' if name in TLS else 's2ds-plain'
            r = ratio(get(ref, n)[0], g)
        else:
            continue
        if name in ('aead-floor', 'copy-floor'):
            span = '(no sockets)'
        gs = '-' if math.isnan(g) or name in ('aead-floor', 'copy-floor') else f"{g:.2f}"
        cs = '-' if math.isnan(c) else f"{c:.3f}"
        fl = ratio(c, floor(name, n))
        fs = '-' if math.isnan(fl) or 'floor' in name else f"{fl:.2f}"
        rs = '-' if math.isnan(r) or name in ('aead-floor', 'copy-floor') else f"{r:.2f}"
        print(f"{name:20} {n:7d} {gs:>8} {span:>13} {cs:>10} {fs:>7} {rs:>10}")
    print()
for n in streams:
    d, p = get('direct', n)[0], get('s2ds-plain', n)[0]
    best = max(get('haproxy-splice', n)[0], get('nginx-stream', n)[0])
    t, s = get('s2ds-tls-pair', n)[0], get('stunnel-psk-pair', n)[0]
    cp, ct, cr, cs = (get(x, n)[1] for x in ('s2ds-plain', 's2ds-tls-pair', 's2ds-tls-rustls-pair', 'stunnel-psk-pair'))
    bestc = min(get('haproxy-splice', n)[1], get('nginx-stream', n)[1])
    print(f"{n} stream(s): s2ds plain / direct = {ratio(p, d):.2f}, / best(HAProxy, Nginx) = {ratio(p, best):.2f}; "
          f"s2ds TLS pair / Stunnel pair = {ratio(t, s):.2f}")
    print(f"  CPU per GiB: s2ds plain / splice floor = {ratio(cp, floor('s2ds-plain', n)):.2f} (target <= 1.15), "
          f"/ least of HAProxy, Nginx = {ratio(cp, bestc):.2f} (target < 1)")
    print(f"  CPU per GiB: s2ds TLS pair / Stunnel pair = {ratio(ct, cs):.2f} (target <= 0.45), "
          f"/ TLS floor = {ratio(ct, floor('s2ds-tls-pair', n)):.2f} (target <= 1.3), "
          f"/ userspace TLS floor = {ratio(ct, floor('tls-floor-userspace', n)):.2f}")
    print(f"  the same on rustls's record layer: {ratio(cr, cs):.2f} / {ratio(cr, floor('s2ds-tls-pair', n)):.2f} / "
          f"{ratio(cr, floor('tls-floor-userspace', n)):.2f}")
print(f"\ns2ds RSS: idle $RSS_IDLE KiB, with 256 open connections $RSS_256 KiB")
print(f"connection setup through s2ds (16 concurrent, 5 s): plain $CPS_PLAIN/s (errors $ERR_PLAIN), "
      f"TLS pair $CPS_TLS/s (errors $ERR_TLS)")
PY
