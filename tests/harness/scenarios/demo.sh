# `cargo xtask demo`: start the unikernel, then either a few visible HTTP requests or the
# user's script (--dom0-script) with GUEST_IP, GUEST_NAME and XL_CONFIG in its environment.
. /payload/lib.sh
GUEST_IP=$UNIKERNEL_IP
uk_prepare
if ! uk_start demo-start; then
	xl destroy "$UK_NAME" >/dev/null 2>&1
	exit 1
fi

if [ "$HAVE_USER_SCRIPT" = 1 ]; then
	begin user-script
	GUEST_IP=$UNIKERNEL_IP GUEST_NAME=$UK_NAME XL_CONFIG=$UK_CFG \
		sh /payload/user-script.sh >/tmp/user-script.out 2>&1
	status=$?
	sed 's/^/@@OUT /' /tmp/user-script.out
	echo "@@USER-STATUS $status"
	if [ $status -eq 0 ]; then
		pass user-script "exit status 0"
	else
		fail user-script "exit status $status"
	fi
	domain_exists "$UK_NAME" && xl destroy "$UK_NAME" >/dev/null 2>&1
	exit 0
fi

show() {
	# show METHOD PATH [BODY_FILE]: one request, its status line and body for the user.
	HTTP_RESP_FILE=/tmp/demo.resp
	rm -f $HTTP_RESP_FILE
	http_req "$@" >/dev/null
	say "$1 $2 -> $(head -n 1 $HTTP_RESP_FILE | tr -d '\r')"
	tr -d '\r' <$HTTP_RESP_FILE | sed '1,/^$/d' | head -c 600 | while read -r l || [ -n "$l" ]; do say "    $l"; done
	unset HTTP_RESP_FILE
}
begin demo-requests
printf 'hello from dom0\n' >/tmp/demo-value
show PUT /kv/greeting /tmp/demo-value
show GET /kv/greeting
printf '%s' '{"answer":42}' >/tmp/demo-json
show PUT /kv/answer /tmp/demo-json
show GET /kv/
show GET /stats
show DELETE /kv/answer
show GET /kv/answer
if http_get /kv/greeting /tmp/demo-back && cmp -s /tmp/demo-value /tmp/demo-back; then
	pass demo-requests "PUT/GET/DELETE answered"
else
	fail demo-requests "GET /kv/greeting did not return what was PUT"
fi

begin demo-shutdown
if xl_shutdown_wait "$UK_NAME" 60; then
	pass demo-shutdown "xl shutdown: domain gone"
else
	fail demo-shutdown "domain still there after 60 s"
	xl destroy "$UK_NAME" >/dev/null 2>&1
fi
