#!/usr/bin/env bash
# Run the four Hookyard services and the web console locally: build
# bin/<service>, bin/console and the CLI bin/hookyard, make sure RabbitMQ
# and Redis are up, start the services and the console, wait for /readyz
# (the console's /healthz), then stream their logs prefixed with the name. Ctrl-C (or SIGTERM) stops
# the services and any RabbitMQ/Redis that this script started itself.
#
# Environment:
#   HOOKYARD_API_KEYS      default dev:devkey-local (a development key, printed)
#   HOOKYARD_ALLOW_CIDRS   default 127.0.0.0/8, so local subscribers work
#   HOOKYARD_AMQP_URL      default amqp://guest:guest@127.0.0.1:5672/<DEV_VHOST>
#   DEV_VHOST              RabbitMQ virtual host of the dev suite (default
#                          hookyard-dev), created with rabbitmqctl or the
#                          management API when missing, so that dev never
#                          shares queues and exchanges with anything else
#                          on the broker; "/" uses the default vhost
#   HOOKYARD_REDIS_URL and other HOOKYARD_* settings are passed through to
#                          every service
#   DEV_BIND_HOST          interface the services listen on (default
#                          127.0.0.1; set it empty to listen on all)
#   DEV_CONSOLE_PORT      port of the web console (default 8084)
#   DEV_READY_TIMEOUT      seconds to wait for every /readyz (default 30)
#   DEV_STOP_TIMEOUT       seconds between SIGTERM and SIGKILL (default 15)
#   DEV_EXIT_AFTER_READY=1 stop everything and exit 0 once all are ready
#   DEV_LOG_FORMAT         "pretty" (default when jq is installed) or "json"
#   DEV_DIR                state and logs (default .dev/ in the repository)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

GO=${GO:-go}
SERVICES=(ingress dispatcher cache jobs)
declare -A HTTP_PORT=([ingress]=8080 [dispatcher]=8081 [cache]=8082 [jobs]=8083)
declare -A GRPC_PORT=([ingress]=9090 [dispatcher]=9091 [cache]=9092 [jobs]=9093)
CONSOLE_PORT=${DEV_CONSOLE_PORT:-8084}
BIND=${DEV_BIND_HOST-127.0.0.1}
HOST=${BIND:-127.0.0.1}
[[ $HOST == 0.0.0.0 ]] && HOST=127.0.0.1
READY_TIMEOUT=${DEV_READY_TIMEOUT:-30}
STOP_TIMEOUT=${DEV_STOP_TIMEOUT:-15}
DEV_DIR=${DEV_DIR:-$ROOT/.dev}
LOG_DIR=$DEV_DIR/logs

say() { printf 'dev: %s\n' "$*"; }
die() { printf 'dev: error: %s\n' "$*" >&2; exit 1; }

port_open() { # host port
	# shellcheck disable=SC2016 # expanded by the inner bash
	timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

command -v curl >/dev/null || die "curl is required (apt-get install -y curl)"

# ----------------------------------------------------------------- build

missing=()
for s in "${SERVICES[@]}"; do
	compgen -G "services/$s/cmd/$s/*.go" >/dev/null || missing+=("services/$s/cmd/$s")
done
((${#missing[@]} == 0)) || die "no main package yet in: ${missing[*]}"

say "building ${SERVICES[*]}, console and hookyard into bin/"
mkdir -p bin "$LOG_DIR"
for s in "${SERVICES[@]}"; do
	"$GO" build -o "bin/$s" "./services/$s/cmd/$s"
done
"$GO" build -o bin/console ./cmd/console
"$GO" build -o bin/hookyard ./cmd/hookyard

for s in "${SERVICES[@]}"; do
	for p in "${HTTP_PORT[$s]}" "${GRPC_PORT[$s]}"; do
		if port_open "$HOST" "$p"; then
			die "port $p (for $s) is already in use on $HOST; is another 'make dev' running?"
		fi
	done
done
if port_open "$HOST" "$CONSOLE_PORT"; then
	die "port $CONSOLE_PORT (for the console) is already in use on $HOST; is another 'make dev' running? (DEV_CONSOLE_PORT moves it)"
fi

# --------------------------------------------------------------- cleanup

declare -A PID=()
export DEPS_STATE_FILE=$DEV_DIR/deps-started
rm -f "$DEPS_STATE_FILE"

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	set +e
	if ((${#PID[@]})); then
		say "stopping ${!PID[*]}"
		kill -TERM "${PID[@]}" 2>/dev/null
		local deadline=$((SECONDS + STOP_TIMEOUT)) alive s
		while ((SECONDS < deadline)); do
			alive=0
			for s in "${!PID[@]}"; do kill -0 "${PID[$s]}" 2>/dev/null && alive=1; done
			((alive)) || break
			sleep 0.2
		done
		local st
		for s in "${!PID[@]}"; do
			if kill -0 "${PID[$s]}" 2>/dev/null; then
				say "$s did not stop within ${STOP_TIMEOUT}s; killing it"
				kill -KILL "${PID[$s]}" 2>/dev/null
			fi
			wait "${PID[$s]}" 2>/dev/null
			st=$?
			if ((st != 0)); then
				say "$s exited with status $st while stopping"
				((rc == 0)) && rc=1
			fi
		done
		sleep 0.2 # let the log prefixers flush
	fi
	if [[ -s $DEPS_STATE_FILE ]]; then
		"$ROOT/deploy/local/deps.sh" stop
	fi
	exit "$rc"
}
trap cleanup EXIT
# Ctrl-C is how dev is meant to stop: a clean stop exits 0.
trap 'exit 0' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------ deps

"$ROOT/deploy/local/deps.sh"

# ----------------------------------------------------------------- vhost

# ensure_vhost VHOST: create the vhost and give guest access to it, with
# rabbitmqctl (as root, or through passwordless sudo) or else the management
# API; return 1 if neither is available.
ensure_vhost() {
	local v=$1 ctl=()
	if command -v rabbitmqctl >/dev/null; then
		if [[ $(id -u) == 0 ]]; then
			ctl=(rabbitmqctl -q)
		elif sudo -n true 2>/dev/null; then
			ctl=(sudo -n rabbitmqctl -q)
		fi
	fi
	if ((${#ctl[@]})) && timeout 30 "${ctl[@]}" list_vhosts name >/dev/null 2>&1; then
		if ! timeout 30 "${ctl[@]}" list_vhosts name | grep -qxF -- "$v"; then
			timeout 30 "${ctl[@]}" add_vhost "$v" >/dev/null || return 1
		fi
		timeout 30 "${ctl[@]}" set_permissions -p "$v" guest '.*' '.*' '.*' >/dev/null || return 1
		return 0
	fi
	local api=http://127.0.0.1:15672/api enc
	enc=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$v" 2>/dev/null) || enc=$v
	if curl -sf -m 5 -u guest:guest "$api/overview" >/dev/null 2>&1; then
		curl -sf -m 10 -u guest:guest -X PUT "$api/vhosts/$enc" >/dev/null &&
			curl -sf -m 10 -u guest:guest -X PUT -H 'Content-Type: application/json' \
				-d '{"configure":".*","write":".*","read":".*"}' "$api/permissions/$enc/guest" >/dev/null &&
			return 0
	fi
	return 1
}

if [[ -z ${HOOKYARD_AMQP_URL:-} ]]; then
	VHOST=${DEV_VHOST-hookyard-dev}
	if [[ -z $VHOST || $VHOST == / ]]; then
		export HOOKYARD_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/
		say "RabbitMQ: using the default vhost '/' (DEV_VHOST=/)"
	else
		ensure_vhost "$VHOST" || die "cannot create the RabbitMQ vhost '$VHOST' (no usable rabbitmqctl, no management API on :15672). Create it once with
  sudo rabbitmqctl add_vhost $VHOST && sudo rabbitmqctl set_permissions -p $VHOST guest '.*' '.*' '.*'
or run with DEV_VHOST=/ to share the broker's default vhost"
		export HOOKYARD_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/$VHOST
		say "RabbitMQ: vhost '$VHOST' ($HOOKYARD_AMQP_URL)"
	fi
fi

if [[ -z ${HOOKYARD_API_KEYS:-} ]]; then
	export HOOKYARD_API_KEYS=dev:devkey-local
	say "HOOKYARD_API_KEYS is unset: using the development key 'devkey-local' (tenant 'dev'); never use it outside your machine"
fi
export HOOKYARD_ALLOW_CIDRS=${HOOKYARD_ALLOW_CIDRS:-127.0.0.0/8}
# Jobs hands completion callbacks to the dispatcher with this key.
export HOOKYARD_SERVICE_KEY=${HOOKYARD_SERVICE_KEY:-dev-service-key-local}
first=${HOOKYARD_API_KEYS%%,*}
KEY=${first#*:}

# ------------------------------------------------------------ processes

log_format=${DEV_LOG_FORMAT:-pretty}
command -v jq >/dev/null || log_format=json

# shellcheck disable=SC2016 # jq program
JQ_PRETTY='. as $raw | (try fromjson catch null) as $j
| if ($j | type) == "object" then
    $p + " " + ([ (($j.time // "") | tostring | .[11:23]), (($j.level // "") | tostring), (($j.msg // "") | tostring) ]
      + ($j | del(.time, .level, .msg) | to_entries
         | map("\(.key)=\(.value | if type == "string" then . else tojson end)"))
      | join(" "))
  else $p + " " + $raw end'

# prefix SERVICE LOGFILE: copy stdin to LOGFILE, print it prefixed.
prefix() {
	local p
	# Keep printing through Ctrl-C: the services log their shutdown after it.
	trap '' INT
	p=$(printf '%-12s' "[$1]")
	if [[ $log_format == pretty ]]; then
		tee "$2" | jq --unbuffered -R -r --arg p "$p" "$JQ_PRETTY"
	else
		tee "$2" | awk -v p="$p" '{ print p, $0; fflush() }'
	fi
}

export HOOKYARD_DISPATCHER_ADDR=${HOOKYARD_DISPATCHER_ADDR:-$HOST:${GRPC_PORT[dispatcher]}}
for s in "${SERVICES[@]}"; do
	HOOKYARD_HTTP_ADDR="$BIND:${HTTP_PORT[$s]}" HOOKYARD_GRPC_ADDR="$BIND:${GRPC_PORT[$s]}" \
		"$ROOT/bin/$s" > >(prefix "$s" "$LOG_DIR/$s.log") 2>&1 &
	PID[$s]=$!
done
# The console proxies /api/<service>/ to each service's REST gateway.
HOOKYARD_CONSOLE_HTTP_ADDR="$BIND:$CONSOLE_PORT" \
	HOOKYARD_INGRESS_HTTP_URL="http://$HOST:${HTTP_PORT[ingress]}" HOOKYARD_DISPATCHER_HTTP_URL="http://$HOST:${HTTP_PORT[dispatcher]}" \
	HOOKYARD_CACHE_HTTP_URL="http://$HOST:${HTTP_PORT[cache]}" HOOKYARD_JOBS_HTTP_URL="http://$HOST:${HTTP_PORT[jobs]}" \
	"$ROOT/bin/console" > >(prefix console "$LOG_DIR/console.log") 2>&1 &
PID[console]=$!

# ------------------------------------------------------------ readiness

declare -A STATUS=()
pending=("${SERVICES[@]}")
deadline=$((SECONDS + READY_TIMEOUT))
while ((${#pending[@]})) && ((SECONDS < deadline)); do
	still=()
	for s in "${pending[@]}"; do
		if ! kill -0 "${PID[$s]}" 2>/dev/null; then
			STATUS[$s]="exited"
			still+=("$s")
			continue
		fi
		code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$HOST:${HTTP_PORT[$s]}/readyz" || true)
		STATUS[$s]="HTTP ${code:-none}"
		if [[ $code != 200 ]]; then
			still+=("$s")
			continue
		fi
		# Ready on HTTP; the gRPC health protocol must say SERVING too.
		if ! health=$("bin/$s" -healthcheck -grpc-addr "$HOST:${GRPC_PORT[$s]}" 2>&1); then
			STATUS[$s]="HTTP 200, gRPC ${health##*: }"
			still+=("$s")
		fi
	done
	pending=("${still[@]}")
	# A service that exited will not become ready: stop waiting.
	for s in "${pending[@]}"; do
		if [[ ${STATUS[$s]} == exited ]]; then deadline=0; fi
	done
	if ((${#pending[@]})); then sleep 0.5; fi
done

if ((${#pending[@]} == 0)); then
	STATUS[console]="no answer on /healthz"
	while ((SECONDS < deadline)); do
		if ! kill -0 "${PID[console]}" 2>/dev/null; then
			break
		fi
		if [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$HOST:$CONSOLE_PORT/healthz" || true) == 200 ]]; then
			STATUS[console]=ready
			break
		fi
		sleep 0.5
	done
	[[ ${STATUS[console]:-} == ready ]] || pending=(console)
fi

if ((${#pending[@]})); then
	sleep 0.3
	for s in "${pending[@]}"; do
		printf '\ndev: %s is not ready (%s); last log lines (%s):\n' "$s" "${STATUS[$s]}" "$LOG_DIR/$s.log" >&2
		tail -n 25 "$LOG_DIR/$s.log" >&2 || true
	done
	die "not ready: ${pending[*]} (readiness timeout ${READY_TIMEOUT}s)"
fi

cat <<EOF

dev: all services are ready: /readyz 200 and gRPC health SERVING (logs in ${LOG_DIR#"$ROOT"/}/)

  service      REST / health / metrics       gRPC
  ingress      http://$HOST:${HTTP_PORT[ingress]}         $HOST:${GRPC_PORT[ingress]}
  dispatcher   http://$HOST:${HTTP_PORT[dispatcher]}         $HOST:${GRPC_PORT[dispatcher]}
  cache        http://$HOST:${HTTP_PORT[cache]}         $HOST:${GRPC_PORT[cache]}
  jobs         http://$HOST:${HTTP_PORT[jobs]}         $HOST:${GRPC_PORT[jobs]}
  console      http://$HOST:$CONSOLE_PORT         (log in with the key $KEY)

The CLI is bin/hookyard (its defaults are these addresses):
  HOOKYARD_API_KEY=$KEY bin/hookyard endpoints list

Try:
  curl -H 'Authorization: Bearer $KEY' http://$HOST:${HTTP_PORT[ingress]}/v1/sources
  grpcurl -plaintext -H 'authorization: Bearer $KEY' $HOST:${GRPC_PORT[ingress]} list
  curl -X POST -H 'Authorization: Bearer $KEY' -H 'Content-Type: application/json' \\
    -d '{"name":"demo","provider":"github","secrets":["dev-secret"]}' http://$HOST:${HTTP_PORT[ingress]}/v1/sources

  # then send it a signed GitHub webhook (GitHub signs the body only, so a
  # new delivery id needs a new body: the same body again is a replay):
  d=\$(date +%s%N); body="{\\"zen\\":\\"hello \$d\\"}"; sig=\$(printf %s "\$body" | openssl dgst -sha256 -hmac dev-secret -r | cut -d' ' -f1)
  curl -i -H 'X-GitHub-Event: ping' -H "X-GitHub-Delivery: \$d" -H "X-Hub-Signature-256: sha256=\$sig" \\
    -H 'Content-Type: application/json' -d "\$body" http://$HOST:${HTTP_PORT[ingress]}/webhooks/demo

EOF

if [[ ${DEV_EXIT_AFTER_READY:-0} == 1 ]]; then
	say "DEV_EXIT_AFTER_READY=1: stopping"
	exit 0
fi

say "streaming logs; press Ctrl-C to stop"
# Return as soon as any service exits: the suite is incomplete without it.
while true; do
	set +e
	wait -n "${PID[@]}"
	rc=$?
	set -e
	for s in "${!PID[@]}"; do
		if ! kill -0 "${PID[$s]}" 2>/dev/null; then
			say "$s exited (status $rc); stopping the others"
			unset "PID[$s]"
			exit 1
		fi
	done
done
