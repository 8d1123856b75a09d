#!/usr/bin/env bash
# Message brokers for the DMZ/intranet bridge tests and benchmarks.
#
#   scripts/brokers.sh start|stop|restart|status [activemq|rabbitmq|all]
#
# ActiveMQ Classic (Debian's `activemq`, installed with apt-get when missing) runs as a
# self-contained instance under .brokers/activemq/ (git-ignored): KahaDB, a DLQ per
# queue, STOMP on 127.0.0.1:61614 with the user of a generated credentials file, and
# mutual-TLS STOMP on 127.0.0.1:61615 where the client certificate is the login (JAAS:
# CN=selfpay-client is the user selfpay-agent). Keys and certificates are generated here at the
# first start and never committed. Idempotent: `start` of a running broker does nothing.
#
# RabbitMQ: the machine's running server; `start` enables its STOMP plugin (61613),
# creates the vhost `selfpay` with permissions for `guest`, and a mutual-TLS STOMP
# listener on 127.0.0.1:61612 with the same test CA (certificate login: a client
# certificate's CN names the user `selfpay-client`). The listener needs a block in
# /etc/rabbitmq/rabbitmq.conf and a restart of the server, done once (~10 s); later
# starts only refresh the certificate files. Otherwise it is not started or stopped
# here (a system service).
#
# Environment: SELFPAY_AMQ_STOMP_PORT (61614), SELFPAY_AMQ_SSL_PORT (61615),
# SELFPAY_RMQ_SSL_PORT (61612), SELFPAY_BROKERS_DIR (.brokers).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BASE_DIR="${SELFPAY_BROKERS_DIR:-$ROOT/.brokers}"
B="$BASE_DIR/activemq"
STOMP_PORT="${SELFPAY_AMQ_STOMP_PORT:-61614}"
SSL_PORT="${SELFPAY_AMQ_SSL_PORT:-61615}"
AMQ_HOME=/usr/share/activemq
RMQ_VHOST=selfpay
RMQ_SSL_PORT="${SELFPAY_RMQ_SSL_PORT:-61612}"
RMQ_TLS_DIR=/etc/rabbitmq/selfpay-tls
RMQ_CONF=/etc/rabbitmq/rabbitmq.conf

log() { echo "brokers: $*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

amq_pid() {
  [ -f "$B/activemq.pid" ] || return 1
  local pid; pid=$(cat "$B/activemq.pid")
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

amq_install() {
  [ -f "$AMQ_HOME/bin/activemq.jar" ] && command -v java >/dev/null && command -v keytool >/dev/null \
    && return 0
  if [ "$(id -u)" -ne 0 ]; then
    log "ActiveMQ is not installed (run: sudo apt-get install -y activemq)"; return 1
  fi
  log "installing Debian's activemq ..."
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q activemq >/dev/null
}

amq_secrets() {
  # Test-only keys and passwords, made once per checkout.
  mkdir -p "$B/conf" "$B/tls" "$B/data"
  chmod 700 "$B/tls"
  if [ ! -f "$B/credentials.env" ]; then
    printf 'SELFPAY_BROKER_USER=selfpay\nSELFPAY_BROKER_PASSWORD=%s\n' "$(openssl rand -hex 16)" \
      > "$B/credentials.env"
    chmod 600 "$B/credentials.env"
  fi
  local t="$B/tls"
  if [ ! -f "$t/truststore.p12" ]; then
    log "generating a test CA, broker and client certificates ..."
    rm -f "$t"/*
    local pw; pw=$(openssl rand -hex 12); echo "$pw" > "$t/storepass"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=selfpay test CA" \
      -keyout "$t/ca.key" -out "$t/ca.pem" 2>/dev/null
    for who in broker client; do
      openssl req -newkey rsa:2048 -nodes -subj "/CN=selfpay-$who" \
        -keyout "$t/$who.key" -out "$t/$who.csr" 2>/dev/null
      printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > "$t/$who.ext"
      openssl x509 -req -in "$t/$who.csr" -CA "$t/ca.pem" -CAkey "$t/ca.key" -CAcreateserial \
        -days 3650 -extfile "$t/$who.ext" -out "$t/$who.pem" 2>/dev/null
    done
    openssl pkcs12 -export -in "$t/broker.pem" -inkey "$t/broker.key" -certfile "$t/ca.pem" \
      -name broker -passout "pass:$pw" -out "$t/broker.p12"
    keytool -importcert -noprompt -alias ca -file "$t/ca.pem" -storetype PKCS12 \
      -keystore "$t/truststore.p12" -storepass "$pw" >/dev/null 2>&1
    chmod 600 "$t"/*
  fi
}

amq_config() {
  # the broker configuration, written into directory $1
  local C="$1" pw user pass
  mkdir -p "$C"
  pw=$(cat "$B/tls/storepass")
  user=$(sed -n 's/^SELFPAY_BROKER_USER=//p' "$B/credentials.env")
  pass=$(sed -n 's/^SELFPAY_BROKER_PASSWORD=//p' "$B/credentials.env")
  cat > "$C/activemq.xml" <<EOF
<beans xmlns="http://www.springframework.org/schema/beans"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xsi:schemaLocation="http://www.springframework.org/schema/beans http://www.springframework.org/schema/beans/spring-beans-2.0.xsd
  http://activemq.apache.org/schema/core http://activemq.apache.org/schema/core/activemq-core.xsd">
  <broker xmlns="http://activemq.apache.org/schema/core" brokerName="selfpay-test"
          useJmx="false" schedulePeriodForDestinationPurge="60000" dataDirectory="$B/data">
    <destinationPolicy>
      <policyMap>
        <policyEntries>
          <!-- a DLQ per queue (DLQ.<queue>); expired requests are dropped, not dead-lettered -->
          <policyEntry queue="&gt;">
            <deadLetterStrategy>
              <individualDeadLetterStrategy queuePrefix="DLQ." useQueueForQueueMessages="true"
                                            processExpired="false"/>
            </deadLetterStrategy>
          </policyEntry>
          <!-- reply queues of web instances that went away are removed after 10 min idle -->
          <policyEntry queue="selfpay.reply.&gt;" gcInactiveDestinations="true"
                       inactiveTimoutBeforeGC="600000">
            <deadLetterStrategy>
              <individualDeadLetterStrategy queuePrefix="DLQ." useQueueForQueueMessages="true"
                                            processExpired="false"/>
            </deadLetterStrategy>
          </policyEntry>
        </policyEntries>
      </policyMap>
    </destinationPolicy>
    <plugins>
      <!-- login + passcode on the plain connector; on stomp+ssl the client certificate
           alone (its subject is mapped to a user in cert-users.properties) -->
      <jaasDualAuthenticationPlugin configuration="selfpay-users" sslConfiguration="selfpay-certs"/>
    </plugins>
    <sslContext>
      <sslContext keyStore="file:$B/tls/broker.p12" keyStorePassword="$pw" keyStoreType="PKCS12"
                  trustStore="file:$B/tls/truststore.p12" trustStorePassword="$pw"
                  trustStoreType="PKCS12"/>
    </sslContext>
    <persistenceAdapter>
      <kahaDB directory="$B/data/kahadb"/>
    </persistenceAdapter>
    <systemUsage>
      <systemUsage>
        <memoryUsage><memoryUsage limit="64 mb"/></memoryUsage>
        <storeUsage><storeUsage limit="1 gb"/></storeUsage>
        <tempUsage><tempUsage limit="256 mb"/></tempUsage>
      </systemUsage>
    </systemUsage>
    <transportConnectors>
      <transportConnector name="stomp"
        uri="stomp://127.0.0.1:$STOMP_PORT?maximumConnections=1000&amp;wireFormat.maxFrameSize=1048576&amp;transport.tcpNoDelay=true"/>
      <transportConnector name="stomp+ssl"
        uri="stomp+ssl://127.0.0.1:$SSL_PORT?maximumConnections=1000&amp;wireFormat.maxFrameSize=1048576&amp;transport.tcpNoDelay=true&amp;transport.needClientAuth=true&amp;transport.enabledProtocols=TLSv1.3,TLSv1.2"/>
    </transportConnectors>
  </broker>
</beans>
EOF
  # JAAS: users with passwords, client certificate subjects mapped to users, one group
  cat > "$C/login.config" <<EOF
selfpay-users {
    org.apache.activemq.jaas.PropertiesLoginModule required
        org.apache.activemq.jaas.properties.user="users.properties"
        org.apache.activemq.jaas.properties.group="groups.properties";
};
selfpay-certs {
    org.apache.activemq.jaas.TextFileCertificateLoginModule required
        org.apache.activemq.jaas.textfiledn.user="cert-users.properties"
        org.apache.activemq.jaas.textfiledn.group="groups.properties";
};
EOF
  printf '%s=%s\n' "$user" "$pass" > "$C/users.properties"
  printf 'selfpay-agent=CN=selfpay-client\n' > "$C/cert-users.properties"
  printf 'selfpay=%s,selfpay-agent\n' "$user" > "$C/groups.properties"
  chmod 600 "$C/users.properties"
  # The Debian build ships log4j 1.2 and ignores log4j2.properties.
  cat > "$C/log4j.properties" <<EOF
log4j.rootLogger=WARN, logfile
log4j.logger.org.apache.activemq=INFO
log4j.logger.org.apache.activemq.broker.TransportConnection=WARN
log4j.appender.logfile=org.apache.log4j.RollingFileAppender
log4j.appender.logfile.file=$B/activemq.log
log4j.appender.logfile.maxFileSize=5MB
log4j.appender.logfile.maxBackupIndex=2
log4j.appender.logfile.layout=org.apache.log4j.PatternLayout
log4j.appender.logfile.layout.ConversionPattern=%d | %-5p | %m | %c | %t%n
EOF
}

amq_config_changed() {
  # Regenerate the configuration; true when it differs from the one in $B/conf.
  rm -rf "$B/conf.new"
  amq_config "$B/conf.new"
  if diff -rq "$B/conf" "$B/conf.new" >/dev/null 2>&1; then rm -rf "$B/conf.new"; return 1; fi
  rm -rf "$B/conf"; mv "$B/conf.new" "$B/conf"
}

amq_start() {
  if pid=$(amq_pid); then
    if ! amq_config_changed; then log "ActiveMQ already running (pid $pid)"; return 0; fi
    log "ActiveMQ configuration changed: restarting it"
    amq_stop
  fi
  if port_open "$STOMP_PORT"; then
    # A test broker left running by another checkout of this project (its credentials
    # and keys live in that checkout): stop it and start ours. Anything else: refuse.
    local stale
    stale=$(pgrep -f -- "-Dactivemq.base=.*/activemq .*xbean:file:.*/activemq/conf/activemq.xml" \
            | grep -v "^$$\$" || true)
    if [ -z "$stale" ]; then
      log "port $STOMP_PORT is taken by another process; not starting ActiveMQ"; return 1
    fi
    log "stopping a test ActiveMQ of another checkout (pid $stale)"
    kill $stale 2>/dev/null || true
    for _ in $(seq 1 150); do port_open "$STOMP_PORT" || break; sleep 0.1; done
    if port_open "$STOMP_PORT"; then kill -9 $stale 2>/dev/null || true; sleep 1; fi
  fi
  amq_install
  amq_secrets
  amq_config_changed || true
  # JVM flags as in /usr/bin/activemq (Java 9+); small heap: a test broker on a shared box.
  setsid java -Xms64M -Xmx256M -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    --add-reads=java.xml=java.logging \
    --add-opens java.base/java.security=ALL-UNNAMED --add-opens java.base/java.net=ALL-UNNAMED \
    --add-opens java.base/java.lang=ALL-UNNAMED --add-opens java.base/java.util=ALL-UNNAMED \
    --add-opens java.naming/javax.naming.spi=ALL-UNNAMED \
    --add-opens java.rmi/sun.rmi.transport.tcp=ALL-UNNAMED \
    --add-opens java.base/java.util.concurrent=ALL-UNNAMED \
    --add-opens java.base/java.util.concurrent.atomic=ALL-UNNAMED \
    -Dlog4j.configuration="file:$B/conf/log4j.properties" \
    -Djava.security.auth.login.config="$B/conf/login.config" \
    -Dactivemq.home="$AMQ_HOME" -Dactivemq.base="$B" -Dactivemq.conf="$B/conf" \
    -Dactivemq.data="$B/data" \
    -jar "$AMQ_HOME/bin/activemq.jar" start "xbean:file:$B/conf/activemq.xml" \
    > "$B/console.log" 2>&1 < /dev/null &
  echo $! > "$B/activemq.pid"
  local i
  for i in $(seq 1 300); do
    if port_open "$STOMP_PORT" && port_open "$SSL_PORT"; then
      log "ActiveMQ up (pid $(cat "$B/activemq.pid"), stomp :$STOMP_PORT, stomp+ssl :$SSL_PORT)"
      return 0
    fi
    if ! amq_pid >/dev/null; then
      log "ActiveMQ exited; see $B/console.log"; tail -20 "$B/console.log" >&2; return 1
    fi
    sleep 0.1
  done
  log "ActiveMQ did not open its ports within 30 s; see $B/console.log"; return 1
}

amq_stop() {
  local pid
  if ! pid=$(amq_pid); then log "ActiveMQ not running"; rm -f "$B/activemq.pid"; return 0; fi
  kill "$pid"
  for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid"; fi
  rm -f "$B/activemq.pid"
  log "ActiveMQ stopped"
}

rmq_ctl() { rabbitmqctl -q "$@"; }

rmq_start() {
  if ! command -v rabbitmqctl >/dev/null; then log "RabbitMQ is not installed"; return 1; fi
  if ! rmq_ctl status >/dev/null 2>&1; then log "RabbitMQ is not running"; return 1; fi
  if ! port_open 61613; then
    rabbitmq-plugins -q enable rabbitmq_stomp >/dev/null
  fi
  rmq_ctl list_vhosts | grep -qx "$RMQ_VHOST" || rmq_ctl add_vhost "$RMQ_VHOST" >/dev/null
  rmq_ctl set_permissions -p "$RMQ_VHOST" guest '.*' '.*' '.*' >/dev/null
  # reply queues of web instances that went away (and test queues) expire after 10 min idle;
  # a policy, not a queue argument, so that no declaration ever disagrees with another
  rmq_ctl set_policy -p "$RMQ_VHOST" --apply-to queues selfpay-expiry \
    '^selfpay\.(reply|test)\.' '{"expires":600000}' >/dev/null
  [ -f /etc/rabbitmq/enabled_plugins ] && chmod a+r /etc/rabbitmq/enabled_plugins || true
  for _ in $(seq 1 100); do port_open 61613 && break; sleep 0.1; done
  if port_open 61613; then log "RabbitMQ STOMP up (:61613, vhost $RMQ_VHOST)"; else
    log "RabbitMQ STOMP port 61613 did not open"; return 1; fi
  rmq_tls
}

rmq_tls_block() {
  cat <<CONF
# selfpay-tls begin (scripts/brokers.sh: a test listener with the test CA)
stomp.listeners.ssl.1 = 127.0.0.1:$RMQ_SSL_PORT
stomp.ssl_cert_login = true
ssl_cert_login_from = common_name
ssl_options.cacertfile = $RMQ_TLS_DIR/ca.pem
ssl_options.certfile = $RMQ_TLS_DIR/broker.pem
ssl_options.keyfile = $RMQ_TLS_DIR/broker.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = true
ssl_options.versions.1 = tlsv1.3
ssl_options.versions.2 = tlsv1.2
# selfpay-tls end
CONF
}

rmq_tls() {
  # The test CA and broker certificate of this checkout (made with ActiveMQ's).
  if [ ! -f "$B/tls/ca.pem" ]; then amq_install && amq_secrets || return 1; fi
  local changed=0 f
  install -d -m 755 "$RMQ_TLS_DIR"
  for f in ca.pem broker.pem broker.key; do
    if ! cmp -s "$B/tls/$f" "$RMQ_TLS_DIR/$f"; then
      install -m 640 -g rabbitmq "$B/tls/$f" "$RMQ_TLS_DIR/$f"; changed=1
    fi
  done
  # the user a client certificate logs in as (its password is never used)
  if ! rmq_ctl list_users | grep -q '^selfpay-client[[:space:]]'; then
    rmq_ctl add_user selfpay-client "$(openssl rand -hex 16)" >/dev/null
  fi
  # configure, write, read: sending to /queue/x is writing to the default exchange
  rmq_ctl set_permissions -p "$RMQ_VHOST" selfpay-client '^selfpay\.' \
    '^(selfpay\..*|amq\.default)$' '^selfpay\.' >/dev/null
  if ! grep -q "^# selfpay-tls begin" "$RMQ_CONF" 2>/dev/null; then
    log "adding a mutual-TLS STOMP listener (:$RMQ_SSL_PORT) to $RMQ_CONF; restarting RabbitMQ"
    rmq_tls_block >> "$RMQ_CONF"
    rabbitmqctl -q stop >/dev/null 2>&1 || true
    rabbitmq-server -detached >/dev/null 2>&1
    # await_startup fails at once while the node is not registered yet: poll it
    local up=0
    for _ in $(seq 1 60); do
      if rabbitmqctl -q await_startup --timeout 5 >/dev/null 2>&1; then up=1; break; fi
      sleep 1
    done
    if [ "$up" != 1 ]; then log "RabbitMQ did not come back after the restart"; return 1; fi
  elif [ "$changed" = 1 ]; then
    # new files at the same paths (a new checkout's CA): drop the server's cache of them
    rmq_ctl eval 'ssl:clear_pem_cache().' >/dev/null
  fi
  for _ in $(seq 1 100); do port_open "$RMQ_SSL_PORT" && port_open 61613 && break; sleep 0.1; done
  if port_open "$RMQ_SSL_PORT"; then log "RabbitMQ STOMP+TLS up (:$RMQ_SSL_PORT)"; else
    log "RabbitMQ STOMP+TLS port $RMQ_SSL_PORT did not open"; return 1; fi
}

status() {
  if pid=$(amq_pid); then echo "activemq: running (pid $pid) stomp :$STOMP_PORT ssl :$SSL_PORT"
  else echo "activemq: stopped"; fi
  if port_open 61613; then echo "rabbitmq: stomp :61613 open"; else echo "rabbitmq: stomp closed"; fi
  if port_open "$RMQ_SSL_PORT"; then echo "rabbitmq: stomp+ssl :$RMQ_SSL_PORT open"; else
    echo "rabbitmq: stomp+ssl closed"; fi
}

cmd="${1:-status}"; which="${2:-all}"
case "$cmd" in
  start)
    rc=0
    if [ "$which" != rabbitmq ]; then amq_start || rc=1; fi
    if [ "$which" != activemq ]; then rmq_start || rc=1; fi
    exit $rc ;;
  stop) if [ "$which" != rabbitmq ]; then amq_stop; fi ;;
  restart) if [ "$which" != rabbitmq ]; then amq_stop; amq_start; fi ;;
  status) status ;;
  *) echo "usage: $0 start|stop|restart|status [activemq|rabbitmq|all]" >&2; exit 2 ;;
esac
