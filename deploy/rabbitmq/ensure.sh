#!/usr/bin/env bash
# Makes sure a RabbitMQ broker answers on 127.0.0.1:5672; starts the local one if it does not.
set -euo pipefail
up() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }
if up; then echo "RabbitMQ answers on 5672"; exit 0; fi
if ! command -v rabbitmq-server >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server
fi
rabbitmq-server -detached
for _ in $(seq 1 60); do
  if up; then echo "RabbitMQ started"; exit 0; fi
  sleep 1
done
echo "RabbitMQ did not come up on 5672" >&2
exit 1
