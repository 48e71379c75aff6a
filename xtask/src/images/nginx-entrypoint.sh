#!/bin/sh
# Listens on $NGINX_PORT (80 unless set), so the image also runs where port 80 is taken:
# hostnetd runs containers in the host's network, where every port is shared.
set -e
port="${NGINX_PORT:-80}"
case "$port" in
    ''|*[!0-9]*) echo "NGINX_PORT must be a port number, not '$port'" >&2; exit 64 ;;
esac
sed -i "s/listen [0-9]*;/listen $port;/; s/listen \[::\]:[0-9]*;/listen [::]:$port;/" /etc/nginx/nginx.conf
exec "$@"
