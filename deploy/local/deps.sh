#!/usr/bin/env bash
# Make sure the RabbitMQ and Redis that Hookyard needs are reachable.
#
#   deploy/local/deps.sh          ensure both are up (the default; same as "up")
#   deploy/local/deps.sh stop     stop the servers a previous "up" started itself
#
# For each server: reuse it when it already answers at HOOKYARD_AMQP_URL /
# HOOKYARD_REDIS_URL; otherwise start the locally installed server on
# loopback; otherwise (as root) install it with apt-get and start it;
# otherwise print the apt-get command to run and exit 1.
#
# Environment:
#   HOOKYARD_AMQP_URL   default amqp://guest:guest@127.0.0.1:5672/
#   HOOKYARD_REDIS_URL  default redis://127.0.0.1:6379/0
#   DEPS_STATE_FILE     if set, "up" appends one line per server it started
#                       ("redis <host> <port>", "rabbitmq <host> <port>") and
#                       "stop" stops exactly those. Servers that were already
#                       running are never recorded, so never stopped.
#   DEPS_LOG_DIR        where a Redis started here logs (default .dev/ in the
#                       repository)
#   DEPS_RABBIT_TIMEOUT seconds to wait for RabbitMQ to boot (default 90)
#   DEPS_NO_INSTALL=1   never run apt-get, even as root
#   DEPS_NO_BROWSER=1   skip what the web console's browser test needs
#                       (Debian's chromium, node and npm, and npm ci in
#                       cmd/console/e2e); without it a missing piece is
#                       installed, or reported without failing: the test
#                       itself fails in CI and skips elsewhere
set -euo pipefail

AMQP_URL=${HOOKYARD_AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/}
REDIS_URL=${HOOKYARD_REDIS_URL:-redis://127.0.0.1:6379/0}
RABBIT_TIMEOUT=${DEPS_RABBIT_TIMEOUT:-90}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LOG_DIR=${DEPS_LOG_DIR:-$ROOT/.dev}
APT_CMD="sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y rabbitmq-server redis-server"

say() { printf 'deps: %s\n' "$*"; }
die() { printf 'deps: error: %s\n' "$*" >&2; exit 1; }

# parse_url URL DEFAULT_PORT -> prints "host port"
parse_url() {
	local rest=${1#*://} port=$2 host
	rest=${rest%%/*}
	rest=${rest%%\?*}
	rest=${rest##*@}
	if [[ $rest == \[* ]]; then # [v6]:port
		host=${rest%%]*}
		host=${host#[}
		rest=${rest#*]}
		[[ $rest == :* && -n ${rest#:} ]] && port=${rest#:}
	elif [[ $rest == *:* ]]; then
		host=${rest%%:*}
		[[ -n ${rest#*:} ]] && port=${rest#*:}
	else
		host=$rest
	fi
	printf '%s %s\n' "${host:-127.0.0.1}" "$port"
}

is_local() {
	case $1 in 127.* | localhost | ::1 | 0.0.0.0) return 0 ;; esac
	return 1
}

port_open() { # host port
	# shellcheck disable=SC2016 # expanded by the inner bash
	timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

is_root() { [[ $(id -u) == 0 ]]; }

record() {
	if [[ -n ${DEPS_STATE_FILE:-} ]]; then
		mkdir -p "$(dirname "$DEPS_STATE_FILE")"
		printf '%s\n' "$*" >>"$DEPS_STATE_FILE"
	fi
}

# apt_install: install both servers (once per run) when allowed; returns 1
# after printing the command to run when it is not.
APT_DONE=0
apt_install() {
	((APT_DONE)) && return 0
	if ! is_root || [[ ${DEPS_NO_INSTALL:-0} == 1 ]] || ! command -v apt-get >/dev/null; then
		printf 'deps: %s is not running and not installed. Install it with:\n  %s\n' "$1" "$APT_CMD" >&2
		return 1
	fi
	say "installing rabbitmq-server and redis-server with apt-get"
	local log
	log=$(mktemp)
	if ! { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y rabbitmq-server redis-server; } >"$log" 2>&1; then
		tail -n 30 "$log" >&2
		rm -f "$log"
		die "apt-get install failed"
	fi
	rm -f "$log"
	APT_DONE=1
}

# ---------------------------------------------------------------- Redis

redis_ping() { # host port
	if command -v redis-cli >/dev/null; then
		local out
		if [[ $REDIS_URL == redis://* || $REDIS_URL == rediss://* ]] && [[ $REDIS_URL != *master_name=* ]]; then
			out=$(timeout 5 redis-cli -u "$REDIS_URL" ping 2>&1) || true
		else
			# A Sentinel (redis+sentinel://, ?master_name=) or Cluster
			# URL, which redis-cli does not take: ask its first host.
			out=$(timeout 5 redis-cli -h "$1" -p "$2" ping 2>&1) || true
		fi
		[[ $out == *PONG* ]]
	else
		port_open "$1" "$2"
	fi
}

redis_up() {
	local host port
	read -r host port < <(parse_url "$REDIS_URL" 6379)
	if port_open "$host" "$port"; then
		redis_ping "$host" "$port" ||
			die "something listens on $host:$port but does not answer Redis PING ($(timeout 5 redis-cli -u "$REDIS_URL" ping 2>&1 | head -n 1))"
		say "redis: reusing $host:$port"
		return 0
	fi
	is_local "$host" || die "redis: $host:$port ($REDIS_URL) is unreachable and not local, so it cannot be started here"
	if ! command -v redis-server >/dev/null; then
		apt_install redis-server || exit 1
		# The package's post-install may have started it already.
		if port_open "$host" "$port" && redis_ping "$host" "$port"; then
			say "redis: reusing $host:$port (started by the package install)"
			return 0
		fi
	fi
	mkdir -p "$LOG_DIR"
	redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
		--dir "$LOG_DIR" --logfile "$LOG_DIR/redis.log" --pidfile "$LOG_DIR/redis-$port.pid" >/dev/null
	local i
	for ((i = 0; i < 50; i++)); do
		if port_open "$host" "$port" && redis_ping "$host" "$port"; then
			record redis "$host" "$port"
			say "redis: started on 127.0.0.1:$port"
			return 0
		fi
		sleep 0.2
	done
	tail -n 20 "$LOG_DIR/redis.log" >&2 2>/dev/null || true
	die "redis: started redis-server but 127.0.0.1:$port does not answer"
}

redis_stop() { # host port
	if command -v redis-cli >/dev/null; then
		redis-cli -h "$1" -p "$2" shutdown nosave >/dev/null 2>&1 || true
	elif [[ -f $LOG_DIR/redis-$2.pid ]]; then
		kill "$(cat "$LOG_DIR/redis-$2.pid")" 2>/dev/null || true
	fi
	say "redis: stopped $1:$2"
}

# ------------------------------------------------------------- RabbitMQ

# Node naming must be identical whenever this script runs rabbitmqctl.
# Without a configured name RabbitMQ uses rabbit@<short hostname>, which does
# not boot when that hostname does not resolve (common in containers).
rabbit_env() {
	local conf=/etc/rabbitmq/rabbitmq-env.conf
	if [[ -z ${RABBITMQ_NODENAME:-} ]] && ! grep -qs '^[[:space:]]*NODENAME=' "$conf" &&
		! getent hosts "$(hostname -s 2>/dev/null || echo localhost)" >/dev/null 2>&1; then
		export RABBITMQ_NODENAME=rabbit@localhost
	fi
	if ! grep -qs '^[[:space:]]*ERL_EPMD_ADDRESS=' "$conf"; then
		export ERL_EPMD_ADDRESS=${ERL_EPMD_ADDRESS:-127.0.0.1}
	fi
}

# rabbitmqctl is usable by root (the Debian wrapper switches to the rabbitmq
# user) and by the rabbitmq user itself; others cannot read the cookie.
can_ctl() {
	command -v rabbitmqctl >/dev/null || return 1
	is_root || [[ $(id -un) == rabbitmq ]]
}

# amqp_handshake: the broker answers the AMQP 0-9-1 protocol header with a
# Connection.Start method frame (type 1, channel 0).
amqp_handshake() { # host port
	# shellcheck disable=SC2016 # expanded by the inner bash
	timeout 5 bash -c '
		exec 3<>"/dev/tcp/$1/$2" || exit 1
		printf "AMQP\x00\x00\x09\x01" >&3
		head -c 3 <&3 | od -An -tx1 | tr -d " \n"
	' _ "$1" "$2" 2>/dev/null | grep -qx '010000'
}

rabbit_ready() { # host port [quiet]
	port_open "$1" "$2" || return 1
	amqp_handshake "$1" "$2" || return 1
	if is_local "$1" && can_ctl; then
		timeout 30 rabbitmqctl -q await_startup --timeout 20 >/dev/null 2>&1 || return 1
	fi
	return 0
}

wait_rabbit() { # host port seconds
	local deadline=$((SECONDS + $3))
	while ((SECONDS < deadline)); do
		rabbit_ready "$1" "$2" && return 0
		sleep 1
	done
	return 1
}

rabbit_up() {
	local host port scheme=${AMQP_URL%%://*} default=5672
	[[ $scheme == amqps ]] && default=5671
	read -r host port < <(parse_url "$AMQP_URL" "$default")
	rabbit_env
	if port_open "$host" "$port"; then
		# Listening, but possibly still booting: wait for it to be fully up.
		wait_rabbit "$host" "$port" "$RABBIT_TIMEOUT" ||
			die "rabbitmq: $host:$port accepts connections but is not ready after ${RABBIT_TIMEOUT}s (rabbitmqctl await_startup / AMQP handshake failed)"
		say "rabbitmq: reusing $host:$port"
		return 0
	fi
	is_local "$host" || die "rabbitmq: $host:$port ($AMQP_URL) is unreachable and not local, so it cannot be started here"
	if ! command -v rabbitmq-server >/dev/null; then
		apt_install rabbitmq-server || exit 1
		if wait_rabbit "$host" "$port" 5; then
			say "rabbitmq: reusing $host:$port (started by the package install)"
			return 0
		fi
	fi
	# If the node is already running (for example with its listener on
	# another port) a second start fails; report it instead of hiding it.
	if can_ctl && timeout 20 rabbitmqctl -q status >/dev/null 2>&1; then
		die "rabbitmq: a node is running but $host:$port does not answer; check its listeners (rabbitmqctl status)"
	fi
	export RABBITMQ_NODE_IP_ADDRESS=${RABBITMQ_NODE_IP_ADDRESS:-127.0.0.1}
	export RABBITMQ_NODE_PORT=${RABBITMQ_NODE_PORT:-$port}
	say "rabbitmq: starting rabbitmq-server on 127.0.0.1:$port (up to ${RABBIT_TIMEOUT}s)"
	rabbitmq-server -detached >/dev/null 2>&1 || die "rabbitmq: rabbitmq-server -detached failed"
	if ! wait_rabbit "$host" "$port" "$RABBIT_TIMEOUT"; then
		for f in /var/log/rabbitmq/startup_err /var/log/rabbitmq/startup_log; do
			[[ -s $f ]] && tail -n 20 "$f" >&2
		done
		die "rabbitmq: not ready on $host:$port after ${RABBIT_TIMEOUT}s"
	fi
	record rabbitmq "$host" "$port"
	say "rabbitmq: started on 127.0.0.1:$port"
}

rabbit_stop() { # host port
	rabbit_env
	if command -v rabbitmqctl >/dev/null; then
		timeout 60 rabbitmqctl -q stop >/dev/null 2>&1 || true
	fi
	say "rabbitmq: stopped $1:$2"
}

# ------------------------------------------------- console browser test

E2E_DIR=$ROOT/cmd/console/e2e

apt_get_quiet() { # packages...
	local log
	log=$(mktemp)
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >"$log" 2>&1; then
		# Stale or missing package lists on a fresh machine.
		if ! { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"; } >"$log" 2>&1; then
			tail -n 20 "$log" >&2
			rm -f "$log"
			return 1
		fi
	fi
	rm -f "$log"
}

browser_up() {
	[[ ${DEPS_NO_BROWSER:-0} == 1 ]] && return 0
	local pkgs=()
	command -v chromium >/dev/null || command -v chromium-browser >/dev/null || pkgs+=(chromium)
	command -v node >/dev/null || pkgs+=(nodejs)
	command -v npm >/dev/null || pkgs+=(npm)
	if ((${#pkgs[@]})); then
		if is_root && [[ ${DEPS_NO_INSTALL:-0} != 1 ]] && command -v apt-get >/dev/null; then
			say "browser test: installing ${pkgs[*]} with apt-get"
			apt_get_quiet "${pkgs[@]}" || {
				say "browser test: apt-get install ${pkgs[*]} failed"
				return 0
			}
		else
			say "browser test: ${pkgs[*]} missing; install with: sudo apt-get install -y ${pkgs[*]}"
			return 0
		fi
	fi
	# npm ci only when the installed tree does not match the lock file.
	if ! cmp -s "$E2E_DIR/package-lock.json" "$E2E_DIR/node_modules/.hookyard-lock" 2>/dev/null; then
		say "browser test: npm ci in cmd/console/e2e"
		(cd "$E2E_DIR" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >/dev/null) || {
			say "browser test: npm ci failed"
			return 0
		}
		cp "$E2E_DIR/package-lock.json" "$E2E_DIR/node_modules/.hookyard-lock"
	fi
	say "browser test: chromium, node and playwright-core ready"
}

# ----------------------------------------------------------------- main

case ${1:-up} in
up)
	rabbit_up
	redis_up
	browser_up
	;;
stop)
	[[ -n ${DEPS_STATE_FILE:-} ]] || die "stop needs DEPS_STATE_FILE (the file a previous up wrote)"
	[[ -f $DEPS_STATE_FILE ]] || exit 0
	while read -r what host port; do
		case $what in
		redis) redis_stop "$host" "$port" ;;
		rabbitmq) rabbit_stop "$host" "$port" ;;
		esac
	done <"$DEPS_STATE_FILE"
	rm -f "$DEPS_STATE_FILE"
	;;
*)
	die "usage: $0 [up|stop]"
	;;
esac
