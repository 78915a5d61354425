#!/usr/bin/env bash
# A broker cluster on one machine: three RabbitMQ nodes clustered together
# and a Redis primary with one replica watched by three Sentinels, all on
# loopback ports of their own, so that failover can be tried (and tested,
# `make test-cluster`) without touching a RabbitMQ or Redis already
# running on the default ports.
#
#   deploy/local/cluster.sh start     start what is not running (idempotent),
#                                     then print the settings to use
#   deploy/local/cluster.sh stop      stop every node and server (data kept)
#   deploy/local/cluster.sh clean     stop, then delete the data directory
#   deploy/local/cluster.sh status    what runs, cluster members, Redis roles
#   deploy/local/cluster.sh env       print HOOKYARD_AMQP_URL and
#                                     HOOKYARD_REDIS_URL for the services
#   deploy/local/cluster.sh kill N    kill -9 RabbitMQ node N (1-3), as a
#                                     crash would; "start" brings it back
#   deploy/local/cluster.sh kill-redis
#                                     kill -9 the Redis primary; the Sentinels
#                                     promote the replica, "start" brings the
#                                     old primary back as a replica
#   deploy/local/cluster.sh failover  ask the Sentinels to promote the replica
#   deploy/local/cluster.sh queues    queues with their type, members and
#                                     ready and unacknowledged messages (JSON)
#   deploy/local/cluster.sh connections
#                                     client connections and the AMQP port
#                                     (so the node) each is on (JSON)
#
# Start the services against it with
#   eval "$(deploy/local/cluster.sh env | sed 's/^/export /')"
#
# Environment (defaults in brackets):
#   CLUSTER_DIR            data, logs and the Erlang cookie [.cluster/ in the
#                          repository]
#   CLUSTER_AMQP_PORTS     AMQP ports of the three nodes [5701 5702 5703];
#                          each node's Erlang distribution port is its AMQP
#                          port + 20000
#   CLUSTER_NODE_PREFIX    node names are <prefix><n>@localhost [hy]
#   CLUSTER_REDIS_PORTS    primary and replica [6391 6392]
#   CLUSTER_SENTINEL_PORTS three Sentinels [26391 26392 26393]
#   CLUSTER_MASTER_NAME    the name Sentinel monitors the primary by [hookyard]
#   CLUSTER_TIMEOUT        seconds a node may take to boot [180]
#   CLUSTER_DLX_CONFIRM_TIMEOUT_MS
#                          how long a quorum queue's at-least-once
#                          dead-letter worker waits for the target's
#                          confirm before it sends again [15000; RabbitMQ's
#                          default is 180000, which parks a delay queue's
#                          retries for 3 minutes when the target queue's
#                          leader dies]
#
# Needs rabbitmq-server (3.10 or later: quorum queues), redis-server and
# redis-cli (7.0 or later; redis-server --sentinel is the Sentinel). The
# management plugin stays off; use rabbitmqctl with the node name and
# HOME=$CLUSTER_DIR (the cookie is there), e.g.
#   HOME=.cluster rabbitmqctl -n hy1@localhost cluster_status
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DIR=${CLUSTER_DIR:-$ROOT/.cluster}
read -r -a AMQP_PORTS <<<"${CLUSTER_AMQP_PORTS:-5701 5702 5703}"
PREFIX=${CLUSTER_NODE_PREFIX:-hy}
read -r -a REDIS_PORTS <<<"${CLUSTER_REDIS_PORTS:-6391 6392}"
read -r -a SENTINEL_PORTS <<<"${CLUSTER_SENTINEL_PORTS:-26391 26392 26393}"
MASTER=${CLUSTER_MASTER_NAME:-hookyard}
TIMEOUT=${CLUSTER_TIMEOUT:-180}
DLX_CONFIRM_TIMEOUT_MS=${CLUSTER_DLX_CONFIRM_TIMEOUT_MS:-15000}

say() { printf 'cluster: %s\n' "$*" >&2; }
die() { printf 'cluster: error: %s\n' "$*" >&2; exit 1; }

((${#AMQP_PORTS[@]} == 3)) || die "CLUSTER_AMQP_PORTS needs three ports, got '${AMQP_PORTS[*]}'"
((${#REDIS_PORTS[@]} == 2)) || die "CLUSTER_REDIS_PORTS needs two ports (primary replica), got '${REDIS_PORTS[*]}'"
((${#SENTINEL_PORTS[@]} == 3)) || die "CLUSTER_SENTINEL_PORTS needs three ports, got '${SENTINEL_PORTS[*]}'"

# Debian's /usr/sbin/rabbitmq-server is a wrapper that switches to the
# rabbitmq user, changes to /var/lib/rabbitmq and resets HOME, which would
# put these nodes on the system node's cookie and directories; the scripts
# it wraps run as any user.
rabbit_bin() { # name
	if [[ -x /usr/lib/rabbitmq/bin/$1 ]]; then
		echo "/usr/lib/rabbitmq/bin/$1"
	else
		command -v "$1" || true
	fi
}

need_tools() {
	local missing=()
	for t in rabbitmq-server rabbitmqctl; do
		[[ -n $(rabbit_bin "$t") ]] || missing+=("$t (apt-get install rabbitmq-server)")
	done
	for t in redis-server redis-cli; do
		command -v "$t" >/dev/null || missing+=("$t (apt-get install redis-server redis-tools)")
	done
	command -v timeout >/dev/null || missing+=("timeout (coreutils)")
	((${#missing[@]} == 0)) || die "missing tools: ${missing[*]}"
}

port_open() { # port
	# shellcheck disable=SC2016 # expanded by the inner bash
	timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

node() { echo "$PREFIX$1@localhost"; }
node_dir() { echo "$DIR/$PREFIX$1"; }

# rabbit_env N: the environment of node N, for the server and for the CLI
# tools that talk to it. HOME holds the cluster's own Erlang cookie.
rabbit_env() {
	local n=$1 d port=${AMQP_PORTS[$(($1 - 1))]}
	d=$(node_dir "$n")
	export HOME=$DIR
	export RABBITMQ_NODENAME
	RABBITMQ_NODENAME=$(node "$n")
	export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
	export RABBITMQ_NODE_PORT=$port
	export RABBITMQ_DIST_PORT=$((port + 20000))
	export RABBITMQ_MNESIA_BASE=$d/mnesia
	export RABBITMQ_LOG_BASE=$d/log
	export RABBITMQ_CONFIG_FILE=$d/rabbitmq.conf
	export RABBITMQ_ADVANCED_CONFIG_FILE=$d/advanced.config
	export RABBITMQ_ENABLED_PLUGINS_FILE=$DIR/enabled_plugins
	export RABBITMQ_PID_FILE=$d/pid
	export RABBITMQ_CONF_ENV_FILE=$DIR/rabbitmq-env.conf
	export ERL_EPMD_ADDRESS=127.0.0.1
}

ctl() { # N args...
	local n=$1
	shift
	(rabbit_env "$n" && timeout 120 "$(rabbit_bin rabbitmqctl)" -q -n "$(node "$n")" "$@")
}

rabbit_running() { # N
	ctl "$1" ping >/dev/null 2>&1
}

rabbit_prepare() {
	mkdir -p "$DIR"
	if [[ ! -f $DIR/.erlang.cookie ]]; then
		(umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/.erlang.cookie")
		chmod 400 "$DIR/.erlang.cookie"
	fi
	[[ -f $DIR/enabled_plugins ]] || echo '[].' >"$DIR/enabled_plugins"
	: >"$DIR/rabbitmq-env.conf"
	local n d
	for n in 1 2 3; do
		d=$(node_dir "$n")
		mkdir -p "$d/mnesia" "$d/log"
		cat >"$d/rabbitmq.conf" <<-EOF
			listeners.tcp.default = 127.0.0.1:${AMQP_PORTS[$((n - 1))]}
			loopback_users.guest = false
			cluster_name = hookyard-local
		EOF
		# Not settable in rabbitmq.conf on 3.10. A dead-lettered message
		# whose confirm was lost (the target queue's leader died) is sent
		# again after this; a duplicate is what the consumers absorb.
		echo "[{rabbit, [{dead_letter_worker_publisher_confirm_timeout, $DLX_CONFIRM_TIMEOUT_MS}]}]." >"$d/advanced.config"
	done
}

# rabbit_start N: boot node N in the background (its output in log/).
rabbit_start() {
	local n=$1 d
	d=$(node_dir "$n")
	if port_open "${AMQP_PORTS[$((n - 1))]}"; then
		die "port ${AMQP_PORTS[$((n - 1))]} is in use but node $(node "$n") of $DIR does not answer; stop what listens there or set CLUSTER_AMQP_PORTS"
	fi
	say "starting RabbitMQ node $(node "$n") on 127.0.0.1:${AMQP_PORTS[$((n - 1))]}"
	# Every descriptor is redirected, so that a caller reading this
	# script's output is not held open by the node.
	(
		rabbit_env "$n"
		cd "$d"
		exec setsid "$(rabbit_bin rabbitmq-server)"
	) >"$d/log/console.log" 2>&1 </dev/null &
}

rabbit_wait() { # N
	local n=$1 deadline=$((SECONDS + TIMEOUT))
	while ((SECONDS < deadline)); do
		if ctl "$n" await_startup --timeout 10 >/dev/null 2>&1; then
			return 0
		fi
		sleep 1
	done
	tail -n 30 "$(node_dir "$n")/log/console.log" >&2 || true
	die "RabbitMQ node $(node "$n") did not boot within ${TIMEOUT}s (CLUSTER_TIMEOUT); its logs are in $(node_dir "$n")/log"
}

# in_cluster N: node N lists node 1 among its running members.
in_cluster() {
	ctl "$1" cluster_status --formatter json 2>/dev/null | grep -q "\"$(node 1)\""
}

rabbit_up() {
	rabbit_prepare
	local n started=()
	for n in 1 2 3; do
		rabbit_running "$n" || {
			rabbit_start "$n"
			started+=("$n")
		}
	done
	for n in "${started[@]}"; do rabbit_wait "$n"; done
	# A fresh node is a cluster of its own; join it to node 1. A node
	# that was a member rejoins by itself when it boots.
	for n in 2 3; do
		in_cluster "$n" && continue
		say "joining $(node "$n") to $(node 1)"
		ctl "$n" stop_app >/dev/null
		ctl "$n" join_cluster "$(node 1)" >/dev/null || die "join_cluster $(node "$n") -> $(node 1) failed"
		ctl "$n" start_app >/dev/null
	done
}

rabbit_stop() {
	local n pid
	for n in 3 2 1; do
		if rabbit_running "$n"; then
			say "stopping $(node "$n")"
			ctl "$n" stop >/dev/null 2>&1 || true
		fi
		pid=$(cat "$(node_dir "$n")/pid" 2>/dev/null || true)
		if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
			kill "$pid" 2>/dev/null || true
		fi
	done
}

rabbit_kill() { # N
	local n=$1 pid
	[[ $n =~ ^[123]$ ]] || die "kill: node number 1, 2 or 3, got '$n'"
	pid=$(cat "$(node_dir "$n")/pid" 2>/dev/null || true)
	[[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || die "node $(node "$n") is not running (no live pid in $(node_dir "$n")/pid)"
	kill -9 "$pid"
	say "killed $(node "$n") (pid $pid) with SIGKILL"
}

# ctl_any args...: rabbitmqctl on the first node that answers.
ctl_any() {
	local n
	for n in 1 2 3; do
		if rabbit_running "$n"; then
			ctl "$n" "$@"
			return
		fi
	done
	die "no RabbitMQ node of $DIR is running"
}

# ---------------------------------------------------------------- Redis

redis_ping() { # port
	[[ $(timeout 5 redis-cli -p "$1" ping 2>/dev/null) == PONG ]]
}

redis_up() {
	local i port d conf
	for i in 0 1; do
		port=${REDIS_PORTS[$i]}
		d=$DIR/redis-$port
		conf=$d/redis.conf
		redis_ping "$port" && continue
		port_open "$port" && die "port $port is in use but does not answer Redis PING; set CLUSTER_REDIS_PORTS"
		mkdir -p "$d"
		# Sentinel rewrites this file on a failover (replicaof), so a
		# restarted server comes back in the role it last had.
		if [[ ! -f $conf ]]; then
			{
				echo "bind 127.0.0.1"
				echo "port $port"
				echo "dir $d"
				echo "appendonly yes"
				echo "appendfsync everysec"
				echo 'save ""'
				echo "logfile $d/redis.log"
				echo "pidfile $d/redis.pid"
				echo "daemonize yes"
				((i == 1)) && echo "replicaof 127.0.0.1 ${REDIS_PORTS[0]}"
			} >"$conf"
		fi
		say "starting Redis on 127.0.0.1:$port"
		redis-server "$conf" >/dev/null
	done
	for port in "${SENTINEL_PORTS[@]}"; do
		d=$DIR/sentinel-$port
		conf=$d/sentinel.conf
		redis_ping "$port" && continue
		port_open "$port" && die "port $port is in use but does not answer Redis PING; set CLUSTER_SENTINEL_PORTS"
		mkdir -p "$d"
		if [[ ! -f $conf ]]; then
			cat >"$conf" <<-EOF
				bind 127.0.0.1
				port $port
				dir $d
				logfile $d/sentinel.log
				pidfile $d/sentinel.pid
				daemonize yes
				sentinel monitor $MASTER 127.0.0.1 ${REDIS_PORTS[0]} 2
				sentinel down-after-milliseconds $MASTER 2000
				sentinel failover-timeout $MASTER 10000
				sentinel parallel-syncs $MASTER 1
			EOF
		fi
		say "starting Sentinel on 127.0.0.1:$port"
		redis-server "$conf" --sentinel >/dev/null
	done
	local deadline=$((SECONDS + 60))
	for port in "${REDIS_PORTS[@]}" "${SENTINEL_PORTS[@]}"; do
		until redis_ping "$port"; do
			((SECONDS < deadline)) || die "Redis on port $port did not answer within 60s (logs in $DIR)"
			sleep 0.2
		done
	done
	# The Sentinels must know the replica and each other before a
	# failover can be asked for.
	until [[ $(redis-cli -p "${SENTINEL_PORTS[0]}" sentinel replicas "$MASTER" 2>/dev/null | grep -c '^ip$') -ge 1 ]] &&
		[[ $(redis-cli -p "${SENTINEL_PORTS[0]}" sentinel sentinels "$MASTER" 2>/dev/null | grep -c '^ip$') -ge 2 ]]; do
		((SECONDS < deadline)) || die "the Sentinels did not discover the replica and each other within 60s (logs in $DIR)"
		sleep 0.5
	done
}

redis_stop() {
	local port
	for port in "${SENTINEL_PORTS[@]}" "${REDIS_PORTS[@]}"; do
		if redis_ping "$port"; then
			say "stopping Redis on $port"
			redis-cli -p "$port" shutdown >/dev/null 2>&1 || true
		fi
	done
}

primary() { # prints host:port of the current primary, as the Sentinels see it
	redis-cli -p "${SENTINEL_PORTS[0]}" sentinel get-master-addr-by-name "$MASTER" 2>/dev/null | paste -sd: -
}

redis_kill() {
	local addr port pid
	addr=$(primary)
	[[ -n $addr ]] || die "the Sentinel on ${SENTINEL_PORTS[0]} does not know master $MASTER; is the cluster running?"
	port=${addr##*:}
	pid=$(cat "$DIR/redis-$port/redis.pid" 2>/dev/null || true)
	[[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || die "no live pid for the Redis primary on $port"
	kill -9 "$pid"
	say "killed the Redis primary on $port (pid $pid) with SIGKILL"
}

failover() {
	local before after deadline=$((SECONDS + 60))
	before=$(primary)
	[[ -n $before ]] || die "the Sentinel on ${SENTINEL_PORTS[0]} does not know master $MASTER; is the cluster running?"
	redis-cli -p "${SENTINEL_PORTS[0]}" sentinel failover "$MASTER" | grep -q OK || die "SENTINEL FAILOVER $MASTER refused"
	while after=$(primary) && [[ $after == "$before" ]]; do
		((SECONDS < deadline)) || die "the primary is still $before 60s after SENTINEL FAILOVER"
		sleep 0.2
	done
	say "Redis primary moved from $before to $after"
}

# ------------------------------------------------------------------ main

print_env() {
	local urls=() p
	for p in "${AMQP_PORTS[@]}"; do urls+=("amqp://guest:guest@127.0.0.1:$p/"); done
	local IFS=,
	echo "HOOKYARD_AMQP_URL=${urls[*]}"
	echo "HOOKYARD_REDIS_URL=redis+sentinel://127.0.0.1:${SENTINEL_PORTS[0]}/0?master_name=$MASTER&addr=127.0.0.1:${SENTINEL_PORTS[1]}&addr=127.0.0.1:${SENTINEL_PORTS[2]}"
}

status() {
	local n
	for n in 1 2 3; do
		if rabbit_running "$n"; then
			echo "rabbitmq $(node "$n") 127.0.0.1:${AMQP_PORTS[$((n - 1))]} running"
		else
			echo "rabbitmq $(node "$n") 127.0.0.1:${AMQP_PORTS[$((n - 1))]} down"
		fi
	done
	for n in 1 2 3; do
		if rabbit_running "$n"; then
			echo "rabbitmq running members: $(ctl "$n" eval 'lists:sort(rabbit_nodes:all_running()).' 2>/dev/null | tr -d '\n ')"
			break
		fi
	done
	local port role
	for port in "${REDIS_PORTS[@]}"; do
		role=$(timeout 5 redis-cli -p "$port" role 2>/dev/null | head -n 1 || true)
		echo "redis 127.0.0.1:$port ${role:-down}"
	done
	for port in "${SENTINEL_PORTS[@]}"; do
		if redis_ping "$port"; then echo "sentinel 127.0.0.1:$port running"; else echo "sentinel 127.0.0.1:$port down"; fi
	done
	echo "redis primary (per Sentinel): $(primary)"
}

case ${1:-} in
start)
	need_tools
	rabbit_up
	redis_up
	say "up; data in $DIR"
	print_env
	;;
stop)
	need_tools
	rabbit_stop
	redis_stop
	;;
clean)
	need_tools
	rabbit_stop
	redis_stop
	rm -rf "$DIR"
	say "removed $DIR"
	;;
status) need_tools && status ;;
env) print_env ;;
kill) rabbit_kill "${2:-}" ;;
kill-redis) need_tools && redis_kill ;;
failover) need_tools && failover ;;
queues) need_tools && ctl_any list_queues name type members messages_ready messages_unacknowledged --formatter json ;;
connections) need_tools && ctl_any list_connections port --formatter json ;;
*) die "usage: $0 start|stop|clean|status|env|kill N|kill-redis|failover|queues|connections" ;;
esac
