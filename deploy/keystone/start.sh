#!/usr/bin/env bash
# Keystone v3 on loopback (Debian's keystone: SQLite, fernet tokens, its simple WSGI server on 127.0.0.1:5000) and
# a second Swift proxy on 127.0.0.1:8081 that authenticates with it (authtoken + keystoneauth), sharing the
# storage servers of deploy/swift/start.sh. Creates project `backups` and user `cbr` (member) with the password in
# $CBR_KEYSTONE_DIR/cbr.password. Idempotent. For tests only: the admin password is fixed.
set -euo pipefail
DIR=${CBR_KEYSTONE_DIR:-/var/tmp/cbr-keystone}
SWIFT_DIR=${CBR_SWIFT_DIR:-/var/tmp/cbr-swift}
ks_up() { curl -sf http://127.0.0.1:5000/v3 >/dev/null 2>&1; }
proxy_up() { curl -sf http://127.0.0.1:8081/healthcheck >/dev/null 2>&1; }
if ks_up && proxy_up; then echo "Keystone on 5000 and Swift (keystone) on 8081 answer"; exit 0; fi

bash "$(dirname "$0")/../swift/start.sh" >/dev/null
if ! command -v keystone-manage >/dev/null || ! python3 -c 'import keystonemiddleware' 2>/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq keystone python3-keystonemiddleware >/dev/null
fi
mkdir -p "$DIR"/{fernet,cred}
chmod 700 "$DIR/fernet" "$DIR/cred"
cat > "$DIR/keystone.conf" <<CONF
[DEFAULT]
log_file = $DIR/keystone.log
[database]
connection = sqlite:///$DIR/keystone.db
[fernet_tokens]
key_repository = $DIR/fernet
[credential]
key_repository = $DIR/cred
[token]
provider = fernet
[catalog]
# A static catalog: creating endpoints through the API hits "database is locked" with SQLite here.
driver = templated
template_file = $DIR/catalog.templates
CONF
cat > "$DIR/catalog.templates" <<'CAT'
catalog.RegionOne.identity.publicURL = http://127.0.0.1:5000/v3
catalog.RegionOne.identity.internalURL = http://127.0.0.1:5000/v3
catalog.RegionOne.identity.adminURL = http://127.0.0.1:5000/v3
catalog.RegionOne.identity.name = Identity Service
catalog.RegionOne.object_store.publicURL = http://127.0.0.1:8081/v1/AUTH_$(tenant_id)s
catalog.RegionOne.object_store.internalURL = http://127.0.0.1:8081/v1/AUTH_$(tenant_id)s
catalog.RegionOne.object_store.adminURL = http://127.0.0.1:8081/
catalog.RegionOne.object_store.name = Swift
CAT
km() { keystone-manage --config-file "$DIR/keystone.conf" "$@" >>"$DIR/manage.log" 2>&1 || true; }
if [ ! -f "$DIR/.bootstrapped" ]; then
  km db_sync
  km fernet_setup --keystone-user root --keystone-group root
  km credential_setup --keystone-user root --keystone-group root
  km bootstrap --bootstrap-password adminpw --bootstrap-admin-url http://127.0.0.1:5000/v3/ \
    --bootstrap-public-url http://127.0.0.1:5000/v3/ --bootstrap-internal-url http://127.0.0.1:5000/v3/ --bootstrap-region-id RegionOne
  touch "$DIR/.bootstrapped"
fi
if ! ks_up; then
  OS_KEYSTONE_CONFIG_DIR="$DIR" OS_KEYSTONE_CONFIG_FILES=keystone.conf nohup keystone-wsgi-public --host 127.0.0.1 --port 5000 >"$DIR/server.log" 2>&1 &
  echo $! > "$DIR/server.pid"
  for _ in $(seq 1 60); do ks_up && break; sleep 0.5; done
fi

# Catalog, project, user (the API, with an admin token).
if [ ! -f "$DIR/.catalog" ]; then
  token=$(curl -sf -i -X POST http://127.0.0.1:5000/v3/auth/tokens -H 'Content-Type: application/json' \
    -d '{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"admin","domain":{"id":"default"},"password":"adminpw"}}},"scope":{"project":{"name":"admin","domain":{"id":"default"}}}}}' \
    | awk 'tolower($1)=="x-subject-token:"{print $2}' | tr -d '\r')
  # SQLite under the threaded dev server answers "database is locked" now and then: retry.
  api() { curl -sf --retry 8 --retry-all-errors --retry-delay 1 -X POST "http://127.0.0.1:5000/v3/$1" -H "X-Auth-Token: $token" -H 'Content-Type: application/json' -d "$2"; }
  id_of() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1']['id'])"; }
  project=$(api projects '{"project":{"name":"backups","domain_id":"default"}}' | id_of project)
  password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
  user=$(api users "{\"user\":{\"name\":\"cbr\",\"domain_id\":\"default\",\"password\":\"$password\"}}" | id_of user)
  role=$(curl -sf "http://127.0.0.1:5000/v3/roles?name=member" -H "X-Auth-Token: $token" | python3 -c "import json,sys; print(json.load(sys.stdin)['roles'][0]['id'])")
  curl -sf --retry 8 --retry-all-errors --retry-delay 1 -X PUT "http://127.0.0.1:5000/v3/projects/$project/users/$user/roles/$role" -H "X-Auth-Token: $token" >/dev/null
  umask 077
  printf '%s' "$password" > "$DIR/cbr.password"
  touch "$DIR/.catalog"
fi

C=$SWIFT_DIR/conf
cat > "$C/proxy-server-keystone.conf" <<CONF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = 8081
workers = 1
user = root
swift_dir = $C

[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats authtoken keystoneauth copy slo dlo proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true

[filter:authtoken]
paste.filter_factory = keystonemiddleware.auth_token:filter_factory
www_authenticate_uri = http://127.0.0.1:5000
auth_url = http://127.0.0.1:5000
auth_type = password
username = admin
password = adminpw
project_name = admin
user_domain_id = default
project_domain_id = default
delay_auth_decision = True
memcached_servers = 127.0.0.1:11211

[filter:keystoneauth]
use = egg:swift#keystoneauth
operator_roles = admin, member

[filter:slo]
use = egg:swift#slo
[filter:dlo]
use = egg:swift#dlo
[filter:copy]
use = egg:swift#copy
[filter:listing_formats]
use = egg:swift#listing_formats
[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:11211
[filter:catch_errors]
use = egg:swift#catch_errors
[filter:gatekeeper]
use = egg:swift#gatekeeper
[filter:healthcheck]
use = egg:swift#healthcheck
[filter:proxy-logging]
use = egg:swift#proxy_logging
CONF
if ! proxy_up; then
  nohup swift-proxy-server "$C/proxy-server-keystone.conf" >"$SWIFT_DIR/log/proxy-server-keystone.log" 2>&1 &
  echo $! > "$SWIFT_DIR/run/proxy-server-keystone.pid"
  for _ in $(seq 1 60); do proxy_up && break; sleep 0.5; done
fi
if ks_up && proxy_up; then echo "Keystone on 5000, Swift (keystone auth) on 8081; user cbr, project backups"; exit 0; fi
echo "Keystone or its Swift proxy did not come up; logs in $DIR and $SWIFT_DIR/log" >&2
exit 1
