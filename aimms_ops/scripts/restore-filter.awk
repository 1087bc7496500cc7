# restore-filter.awk: make a plain pg_dumpall dump replay exactly onto a live cluster.
# POSIX awk (mawk, gawk, busybox). Lines inside COPY data are passed through untouched.
#   CREATE ROLE x;              -> tolerated when the role exists (a DO block)
#   DROP ROLE ... (--clean)     -> kept as a comment: roles are kept or updated, never dropped
#   DROP DATABASE ... (--clean) -> WITH (FORCE), which ends the open sessions
#   CREATE DATABASE x ...       -> preceded, on the same line, by DROP DATABASE IF EXISTS x WITH (FORCE)
#   \connect postgres           -> preceded by one line that recreates the postgres database
# With -v only=NAME only that database's section is replayed: every other line becomes
# empty, so psql's line numbers stay those of the dump. The one line that may be inserted
# is reported on stderr as "aimms-ops: inserted line N", N counted in the output.
# A stream that ends inside COPY data (cut short: Ctrl-C, a dropped connection) ends
# with one row of more columns than any table can have: the COPY fails and its rows
# are rolled back, instead of psql keeping a table that looks complete but is not.
# A stream that ends before the dump's completion marker makes awk exit 3.
BEGIN { in_copy = 0; section = ""; keep = (only == ""); out = 0; recreated = 0 }

in_copy {
    if ($0 == "\\.") in_copy = 0
    emit($0)
    next
}

/^-- Database ".*" dump$/ {
    section = substr($0, 14, length($0) - 19)
    if (only != "") keep = (section == only)
    emit($0)
    next
}

$0 == "-- PostgreSQL database cluster dump complete" {
    complete = 1
    if (only != "") keep = 0
    emit($0)
    next
}

!keep { emit(""); next }

/^COPY .* FROM stdin;$/ { in_copy = 1; emit($0); next }

/^CREATE ROLE .*;$/ {
    emit("DO $aimms_ops$BEGIN " $0 " EXCEPTION WHEN duplicate_object THEN NULL; END$aimms_ops$;")
    next
}

/^DROP ROLE / { emit("-- aimms-ops kept the role: " $0); next }

/^DROP DATABASE .*;$/ {
    line = $0
    if (line !~ /WITH \(FORCE\);$/) line = substr(line, 1, length(line) - 1) " WITH (FORCE);"
    emit(line)
    next
}

/^CREATE DATABASE / {
    emit("DROP DATABASE IF EXISTS " dbname(substr($0, 17)) " WITH (FORCE); " $0)
    next
}

section == "postgres" && !recreated && ($0 == "\\connect postgres" || $0 ~ /^\\connect -reuse-previous=on "dbname='postgres'"$/) {
    recreated = 1
    emit("\\connect template1 \\\\ DROP DATABASE IF EXISTS postgres WITH (FORCE); CREATE DATABASE postgres WITH TEMPLATE = template0;")
    print "aimms-ops: inserted line " out > "/dev/stderr"
    emit($0)
    next
}

{ emit($0) }

END {
    if (in_copy) {
        print "aimms-ops: the dump stream ended inside the data of a table" > "/dev/stderr"
        cut = "aimms-ops: stream cut short"
        for (i = 0; i < 1700; i++) cut = cut "\t"
        emit(cut)
    }
    if (!complete) {
        print "aimms-ops: the dump ended before its completion marker: the restore is incomplete" > "/dev/stderr"
        exit 3
    }
}

function emit(s) { print s; out++ }

# The database name at the start of s: an identifier, or a double-quoted name ("" inside).
function dbname(s,    i, c, n) {
    if (substr(s, 1, 1) != "\"") {
        n = index(s, " ")
        return n ? substr(s, 1, n - 1) : s
    }
    for (i = 2; i <= length(s); i++) {
        c = substr(s, i, 1)
        if (c == "\"") {
            if (substr(s, i + 1, 1) == "\"") { i++; continue }
            return substr(s, 1, i)
        }
    }
    return s
}
