"""What an episode process may touch: an audit-hook guard and, on Linux, a Landlock domain.

A harness is untrusted code that the Meta agent (or a policy-gradient loop) keeps
rewriting to raise its reward, so the cheapest way to "solve" a task is to read its labels.
An episode process therefore runs under two layers:

1. **The audit-hook guard** (:func:`install`, every platform). Before ``agent.py`` is
   imported, :func:`sys.addaudithook` installs a hook that sees every file open, directory
   listing, file-system change, process spawn, signal, socket connect/bind/send, DNS lookup
   and fresh import, and refuses (``PermissionError("sandbox: ...")``) what falls outside
   the :class:`Policy`: reads only under the harness folder, the scratch folder, the Python
   installation (``sys.prefix``, ``sys.base_prefix``, site-packages) and a short list of
   public system files (CA certificates, time zones, locales, ``/etc/os-release``, own
   ``/proc/<pid>``, ``/dev/null``, ``/dev/urandom``); writes only under scratch (and
   ``/dev/null``); no ``subprocess``/``os.system``/``exec``/``fork``/``posix_spawn``; no
   symlinks or hard links; signals only to itself; sockets only to ``127.0.0.1``/``::1``/
   ``localhost``; no raising of its own resource limits (it runs as whatever user the
   orchestrator is, possibly root); no ``gc`` object walks (the easy way to reach and empty
   the guard's bookkeeping). Paths are resolved (``..``, symlinks, ``/proc/self``, a
   ``dir_fd`` where the event carries one) before they are checked. ``ctypes``, ``cffi``,
   sub-interpreters and CPython's ``_test*`` modules (they run code the hook never sees)
   cannot be imported: that import raises ``ImportError("sandbox: ...")``, the error
   libraries expect of an optional dependency (numpy tries ``ctypes``), and is not counted
   as a violation, since nothing was accessed.

   Every refusal is also written at once, as a ``{"violation": ...}`` line, to the
   episode's result pipe, so a harness that catches the ``PermissionError`` and carries on
   still fails: the runner fails any episode with a violation line. If that pipe is gone
   (the harness closed it) the process exits with :data:`LOST_CHANNEL_EXIT`.

   This is a **guard, not an OS sandbox**. The hook lives in the same interpreter as the
   code it watches: native code never raises audit events (a C extension's own ``open``,
   an OpenSSL file load), ``os.open(..., dir_fd=...)`` is reported without its ``dir_fd``,
   ``_imp.create_dynamic`` can re-create an extension module the guard disarmed, and a
   determined harness can find and rewrite the hook's state through frames or cells.
   What it buys: every ordinary way Python code reads a file, lists a folder, spawns a
   program or opens a socket is refused with a reason that names the path and reaches the
   episode record; a harness that "discovers" the labels by accident or by reward hacking
   is caught, and the mistake is explained to whoever edits the harness next. It costs
   well under a millisecond per episode (one closure call per audited event).

2. **Landlock** (:func:`apply_landlock`, Linux ≥ 5.13 with Landlock enabled). The runner
   starts the episode script with ``--landlock``; that first interpreter restricts itself
   (``landlock_restrict_self`` after ``PR_SET_NO_NEW_PRIVS``) and ``exec``-s the real
   episode, which inherits the domain and can never leave it. The kernel then refuses any
   read outside the same allowlist (plus ``/usr``, ``/lib*`` and ``ld.so.cache``, which the
   dynamic loader needs), any write outside scratch, any ``execve`` of anything but the
   Python binary, on ABI ≥ 4 any TCP connect except to the gateway's port and any TCP
   bind, and on ABI ≥ 6 any signal or abstract UNIX socket to a process outside the
   episode: native code and guard tampering included. ``ctypes`` is loaded only in that
   first interpreter, never in the one that runs the harness. Where the kernel has no
   Landlock (or ``SIA_EPISODE_LANDLOCK=0`` is set for the orchestrator) episodes run under
   the guard alone; where the runner found Landlock but the episode cannot enter it, the
   episode fails (``sandbox: cannot confine the episode``) rather than run unconfined.

Installed without ``-e``, the project's own packages sit in site-packages, which both
layers let an episode read; :func:`episode_policy` cuts them out (:func:`excluding`), so
task code that could rebuild an item's label stays out of reach either way.

Not built: a network namespace (Landlock does
not cover UDP or the destination host of TCP; but a fresh namespace has a loopback of its
own, so the episode would reach the gateway only through a relay over a UNIX socket, which
the gateway does not offer), a seccomp filter, a separate user id (the orchestrator may run
as root, and the harness as the same user: Landlock confines root too, but ``stat`` and
other metadata calls stay open, and ``RLIMIT_NPROC`` binds no root), cgroup memory/pids
limits.

This module imports only the standard library (``ctypes`` lazily, for Landlock): the
episode process loads it by path, next to untrusted code, without importing the project.
"""

from __future__ import annotations

import json
import os
import site
import socket
import stat
import sys
import sysconfig
from collections.abc import Callable, Iterable, Sequence
from typing import Any

__all__ = [
    "LOST_CHANNEL_EXIT",
    "PROJECT_PACKAGES",
    "SYSTEM_READ_PATHS",
    "Policy",
    "apply_landlock",
    "episode_policy",
    "install",
    "landlock_abi",
]

# The exit code of an episode whose violation could not be reported (result pipe gone).
LOST_CHANNEL_EXIT = 86
# Violation lines written to the result pipe at most; later ones only count.
_MAX_REPORTED = 8
_MAX_MESSAGE = 600

# Public, secret-free system files that the standard library and the openai/httpx stack
# read: CA certificates, time zones, locales, MIME types, name-service configuration.
SYSTEM_READ_PATHS: tuple[str, ...] = (
    "/etc/ssl",
    "/etc/pki",
    "/etc/ca-certificates",
    "/usr/lib/ssl",
    "/usr/share/ca-certificates",
    "/usr/local/share/ca-certificates",
    "/etc/localtime",
    "/etc/timezone",
    "/usr/share/zoneinfo",
    "/usr/share/locale",
    "/usr/lib/locale",
    "/etc/locale.alias",
    "/etc/os-release",
    "/usr/lib/os-release",
    "/etc/lsb-release",
    "/etc/mime.types",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/resolv.conf",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/services",
    "/etc/protocols",
    "/dev/urandom",
    "/dev/random",
    "/dev/zero",
)
_DEV_NULL = "/dev/null"
# The project's own packages. Installed without ``-e`` they sit in site-packages, which an
# episode may read; task code there could rebuild an item's label, so they are cut out.
PROJECT_PACKAGES = ("sia", "statemachine", "harness_repo", "ledger", "rl", "tasks")
# Only Landlock needs these: the dynamic loader maps libc, libssl, ... before Python runs.
_LOADER_READ_PATHS = ("/usr", "/lib", "/lib64", "/lib32", "/libx32", "/etc/ld.so.cache")

# Modules that run code the hook cannot see: foreign calls, sub-interpreters (audit hooks
# are per interpreter), CPython's test helpers (raw memory access).
_DENIED_IMPORTS = frozenset(
    {
        "ctypes",
        "_ctypes",
        "_ctypes_test",
        "cffi",
        "_cffi_backend",
        "_posixsubprocess",
        "_xxsubinterpreters",
        "_xxinterpchannels",
        "_interpreters",
        "_interpchannels",
        "_interpqueues",
        "_testcapi",
        "_testinternalcapi",
        "_testmultiphase",
        "_testsinglephase",
        "_testimportmultiple",
        "_testbuffer",
        "_testclinic",
    }
)
_SPAWN_EVENTS = frozenset(
    {
        "subprocess.Popen",
        "os.system",
        "os.exec",
        "os.fork",
        "os.forkpty",
        "os.posix_spawn",
        "os.spawn",
        "os.startfile",
        "pty.spawn",
        "webbrowser.open",
    }
)
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost", "0:0:0:0:0:0:0:1"})


class Policy:
    """Where an episode may read and write: absolute, resolved paths (folders or files).

    ``write`` paths are readable too. ``read`` paths are the hook's allowlist; Landlock adds
    the loader's folders (``/usr``, ``/lib*``) and ``exec`` (the Python binary).
    """

    __slots__ = ("exec", "read", "write")

    def __init__(self, read: Iterable[str], write: Iterable[str], exec: Iterable[str] = ()) -> None:
        self.read = _unique(read)
        self.write = _unique(write)
        self.exec = _unique(exec)

    def __repr__(self) -> str:
        return f"Policy(read={self.read!r}, write={self.write!r}, exec={self.exec!r})"


def episode_policy(
    harness_dir: str | os.PathLike[str],
    scratch: str | os.PathLike[str],
    extra_read: Iterable[str | os.PathLike[str]] = (),
) -> Policy:
    """The allowlist of one episode process, built from this interpreter's own layout."""
    python = {
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        sys.base_exec_prefix,
        os.path.dirname(sys.executable),
    }
    layout = sysconfig.get_paths()
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = layout.get(key)
        if path:
            python.add(path)
    if hasattr(site, "getsitepackages"):
        python.update(site.getsitepackages())
    executable = os.path.realpath(sys.executable)
    python.add(executable)
    pid = os.getpid()
    read = [
        os.fspath(harness_dir),
        *excluding(_unique(python), project_folders()),
        *SYSTEM_READ_PATHS,
        _DEV_NULL,
        f"/proc/{pid}",
        *(os.fspath(path) for path in extra_read),
    ]
    write = [os.fspath(scratch), _DEV_NULL, f"/proc/{pid}/fd"]
    exec_ = [executable, *_elf_interpreter(executable)]
    return Policy(read, write, exec_)


# ------------------------------------------------------------------------------------------
# The audit hook


def install(policy: Policy, report_fd: int) -> None:
    """Install the guard for the rest of this process's life (audit hooks cannot be removed).

    Every refused action raises ``PermissionError("sandbox: <what> denied")`` in the caller
    and is written as ``{"violation": "<what> denied"}`` to ``report_fd`` first.
    """
    read_roots = policy.read + policy.write
    write_roots = policy.write
    pid = os.getpid()
    own_group = os.getpgid(0) if hasattr(os, "getpgid") else pid
    state = {"reported": 0}
    encode = json.dumps
    realpath = os.path.realpath
    fsdecode = os.fsdecode
    write = os.write
    exit_now = os._exit
    readlink = os.readlink
    access_mode = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
    unix = getattr(socket, "AF_UNIX", None)
    inet = (socket.AF_INET, socket.AF_INET6)
    allowed_families = {*inet, unix} - {None}

    def deny(what: str) -> None:
        message = f"{what} denied"[:_MAX_MESSAGE]
        if state["reported"] < _MAX_REPORTED:
            state["reported"] += 1
            line = (encode({"violation": message}) + "\n").encode("utf-8", "replace")
            try:
                write(report_fd, line)
            except OSError:
                # The harness closed the result pipe: a violation must never go unreported.
                exit_now(LOST_CHANNEL_EXIT)
        raise PermissionError(f"sandbox: {message}")

    def resolve(path: Any, dir_fd: Any = None) -> str | None:
        """The resolved absolute path, or None for an already open file descriptor."""
        if isinstance(path, int) or path is None:
            return None
        try:
            text = fsdecode(path)
        except TypeError:
            return None
        if isinstance(dir_fd, int) and dir_fd >= 0 and not text.startswith("/"):
            try:
                text = readlink(f"/proc/self/fd/{dir_fd}") + "/" + text
            except OSError:
                deny(f"access relative to file descriptor {dir_fd} ({text})")
        return realpath(text)

    def inside(path: str, roots: tuple[str, ...]) -> bool:
        for root in roots:
            if path == root or path.startswith(root if root == "/" else root + "/"):
                return True
        return False

    def check_read(path: Any, dir_fd: Any = None) -> None:
        resolved = resolve(path, dir_fd)
        if resolved is not None and not inside(resolved, read_roots):
            deny(f"read of {resolved}")

    def check_write(path: Any, dir_fd: Any = None) -> None:
        resolved = resolve(path, dir_fd)
        if resolved is not None and not inside(resolved, write_roots):
            deny(f"write of {resolved}")

    def host_of(address: Any) -> Any:
        return address[0] if isinstance(address, tuple) and address else address

    def loopback(host: Any) -> bool:
        if isinstance(host, bytes):
            host = host.decode("ascii", "replace")
        if not isinstance(host, str):
            return False
        return host in _LOOPBACK_HOSTS or host.startswith("127.")

    def check_peer(sock: Any, address: Any, verb: str) -> None:
        family = getattr(sock, "family", None)
        if family in inet:
            host = host_of(address)
            if not loopback(host):
                deny(f"{verb} to {host!r} (only loopback)")
        elif unix is not None and family == unix:
            if isinstance(address, (str, bytes)) and address[:1] not in ("\0", b"\0", ""):
                check_write(address)
            else:
                deny(f"{verb} to abstract UNIX socket {address!r}")
        else:
            deny(f"{verb} on socket family {family!r}")

    def on_open(args: tuple[Any, ...]) -> None:
        path, mode, flags = (*args, None, None, None)[:3]
        writing = isinstance(flags, int) and bool(flags & access_mode)
        if isinstance(mode, str) and any(c in mode for c in "wax+"):
            writing = True
        if writing:
            check_write(path)
        else:
            check_read(path)

    def on_listing(args: tuple[Any, ...]) -> None:
        check_read(args[0] if args else ".")

    def on_walk(args: tuple[Any, ...]) -> None:
        if args:
            check_read(args[0])

    def on_path_dirfd(index_of_dirfd: int, writing: bool) -> Callable[[tuple[Any, ...]], None]:
        def check(args: tuple[Any, ...]) -> None:
            dir_fd = args[index_of_dirfd] if len(args) > index_of_dirfd else None
            (check_write if writing else check_read)(args[0], dir_fd)

        return check

    def on_rename(args: tuple[Any, ...]) -> None:
        source, target = args[0], args[1]
        check_write(source, args[2] if len(args) > 2 else None)
        check_write(target, args[3] if len(args) > 3 else None)

    def on_link(args: tuple[Any, ...]) -> None:
        deny(f"link {fsdecode(args[1]) if len(args) > 1 else '?'} -> {args[0]!r}")

    def on_copy(args: tuple[Any, ...]) -> None:
        check_read(args[0])
        if len(args) > 1:
            check_write(args[1])

    def on_write_first(args: tuple[Any, ...]) -> None:
        if args:
            check_write(args[0])

    def on_spawn(event: str) -> Callable[[tuple[Any, ...]], None]:
        def check(args: tuple[Any, ...]) -> None:
            named = event in ("subprocess.Popen", "os.exec", "os.posix_spawn", "os.system")
            detail = f" of {args[0]!r}" if named and args else ""
            deny(f"process spawn ({event}){detail}")

        return check

    def on_import(args: tuple[Any, ...]) -> None:
        # An unavailable module is not an access: ImportError, the error libraries expect
        # of an optional dependency (numpy tries ctypes), and no violation line.
        name = args[0] if args else ""
        if isinstance(name, str) and name.split(".", 1)[0] in _DENIED_IMPORTS:
            raise ImportError(f"sandbox: import of {name} denied", name=name)

    def on_kill(args: tuple[Any, ...]) -> None:
        target, signal_number = args[0], args[1] if len(args) > 1 else None
        if target not in (0, pid, -own_group):
            deny(f"signal {signal_number} to process {target}")

    def on_killpg(args: tuple[Any, ...]) -> None:
        if args[0] not in (0, own_group):
            deny(f"signal {args[1] if len(args) > 1 else '?'} to process group {args[0]}")

    def on_socket_new(args: tuple[Any, ...]) -> None:
        family = args[1] if len(args) > 1 else None
        kind = args[2] if len(args) > 2 else None
        if isinstance(family, int) and family not in allowed_families and family != -1:
            deny(f"socket of family {family}")
        raw = getattr(socket, "SOCK_RAW", None)
        if raw is not None and isinstance(kind, int) and kind & 0xF == raw:
            deny("raw socket")

    def on_connect(args: tuple[Any, ...]) -> None:
        check_peer(args[0], args[1] if len(args) > 1 else None, "connect")

    def on_bind(args: tuple[Any, ...]) -> None:
        check_peer(args[0], args[1] if len(args) > 1 else None, "bind")

    def on_send(args: tuple[Any, ...]) -> None:
        address = args[1] if len(args) > 1 else None
        if address is not None:
            check_peer(args[0], address, "send")

    def on_lookup(args: tuple[Any, ...]) -> None:
        host = args[0] if args else None
        if host is not None and not loopback(host):
            deny(f"name lookup of {host!r} (only loopback)")

    def on_nameinfo(args: tuple[Any, ...]) -> None:
        if args and not loopback(host_of(args[0])):
            deny(f"name lookup of {host_of(args[0])!r} (only loopback)")

    def on_sqlite(args: tuple[Any, ...]) -> None:
        database = args[0] if args else ""
        if isinstance(database, (str, bytes, os.PathLike)):
            text = fsdecode(database)
            if text in ("", ":memory:") or text.startswith("file::memory:"):
                return
            if text.startswith("file:"):
                text = text[5:].split("?", 1)[0]
            check_write(text)

    def refuse(what: str) -> Callable[[tuple[Any, ...]], None]:
        def check(args: tuple[Any, ...]) -> None:
            deny(what)

        return check

    handlers: dict[str, Callable[[tuple[Any, ...]], None]] = {
        "open": on_open,
        "os.listdir": on_listing,
        "os.scandir": on_listing,
        "os.chdir": on_listing,
        "os.listxattr": on_listing,
        "os.getxattr": on_walk,
        "os.walk": on_walk,
        "os.fwalk": on_walk,
        "os.mkdir": on_path_dirfd(2, writing=True),
        "os.remove": on_path_dirfd(1, writing=True),
        "os.rmdir": on_path_dirfd(1, writing=True),
        "os.chmod": on_path_dirfd(2, writing=True),
        "os.chown": on_path_dirfd(3, writing=True),
        "os.utime": on_path_dirfd(3, writing=True),
        "os.chflags": on_write_first,
        "os.lchflags": on_write_first,
        "os.lchmod": on_write_first,
        "os.lchown": on_write_first,
        "os.truncate": on_write_first,
        "os.setxattr": on_write_first,
        "os.removexattr": on_write_first,
        "os.rename": on_rename,
        "os.link": on_link,
        "os.symlink": on_link,
        "os.mkfifo": refuse("creating a FIFO"),
        "os.mknod": refuse("creating a device node"),
        "shutil.copyfile": on_copy,
        "shutil.copymode": on_copy,
        "shutil.copystat": on_copy,
        "shutil.copytree": on_copy,
        "shutil.move": on_rename,
        "shutil.rmtree": on_write_first,
        "shutil.chown": on_write_first,
        "shutil.unpack_archive": on_copy,
        "import": on_import,
        "os.kill": on_kill,
        "os.killpg": on_killpg,
        "resource.setrlimit": refuse("changing a resource limit"),
        "resource.prlimit": refuse("changing a resource limit"),
        "socket.__new__": on_socket_new,
        "socket.connect": on_connect,
        "socket.bind": on_bind,
        "socket.sendto": on_send,
        "socket.sendmsg": on_send,
        "socket.getaddrinfo": on_lookup,
        "socket.gethostbyname": on_lookup,
        "socket.gethostbyaddr": on_lookup,
        "socket.getnameinfo": on_nameinfo,
        "sqlite3.connect": on_sqlite,
        "sqlite3.connect/handle": lambda args: None,
        "sqlite3.enable_load_extension": refuse("loading a SQLite extension"),
        "sqlite3.load_extension": refuse("loading a SQLite extension"),
        "gc.get_objects": refuse("walking the garbage collector's objects"),
        "gc.get_referrers": refuse("walking the garbage collector's objects"),
        "gc.get_referents": refuse("walking the garbage collector's objects"),
    }
    for event in _SPAWN_EVENTS:
        handlers[event] = on_spawn(event)
    lookup = handlers.get
    # Rebinding a guard function's code or defaults raises "object.__setattr__": refused.
    guarded: set[int] = {id(f) for f in (deny, resolve, check_read, check_write)}
    guarded.update(id(f) for f in handlers.values())

    def hook(event: str, args: tuple[Any, ...]) -> None:
        handler = lookup(event)
        if handler is not None:
            handler(args)
        elif event == "object.__setattr__" and args and id(args[0]) in guarded:
            deny("rewriting the sandbox guard")
        elif event.startswith("ctypes."):
            # ctypes may be loaded (the fork server's Landlock step): its classes stay
            # reachable through ``__subclasses__``, so every use of them is refused.
            deny(f"foreign-function use ({event})")

    guarded.add(id(hook))
    _disarm_preloaded(deny)
    sys.addaudithook(hook)


def _disarm_preloaded(deny: Callable[[str], None]) -> None:
    """Modules the interpreter loaded before the hook was there can't be re-imported past it.

    ``_posixsubprocess.fork_exec`` spawns without the ``subprocess.Popen`` event when
    called directly; ``subprocess`` itself looks it up at call time, so one replacement
    covers both.
    """
    module = sys.modules.get("_posixsubprocess")
    if module is not None:

        def fork_exec(*args: Any, **kwargs: Any) -> Any:
            deny("process spawn (_posixsubprocess.fork_exec)")

        module.fork_exec = fork_exec  # type: ignore[attr-defined]
    for name in ("_ctypes", "ctypes", "_cffi_backend"):
        if name in sys.modules:
            # Imported by the trusted start-up code: still not the harness's to use.
            del sys.modules[name]


# ------------------------------------------------------------------------------------------
# Landlock (Linux)

_SYS_CREATE_RULESET = 444
_SYS_ADD_RULE = 445
_SYS_RESTRICT_SELF = 446
_PR_SET_NO_NEW_PRIVS = 38
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_RULE_NET_PORT = 2

_FS_EXECUTE = 1 << 0
_FS_WRITE_FILE = 1 << 1
_FS_READ_FILE = 1 << 2
_FS_READ_DIR = 1 << 3
_FS_REFER = 1 << 13
_FS_TRUNCATE = 1 << 14
_FS_IOCTL_DEV = 1 << 15
_FILE_RIGHTS = _FS_EXECUTE | _FS_WRITE_FILE | _FS_READ_FILE | _FS_TRUNCATE | _FS_IOCTL_DEV
_NET_BIND_TCP = 1 << 0
_NET_CONNECT_TCP = 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
_SCOPE_SIGNAL = 1 << 1


def _handled_fs(abi: int) -> int:
    rights = (1 << 13) - 1  # ABI 1: EXECUTE ... MAKE_SYM
    if abi >= 2:
        rights |= _FS_REFER
    if abi >= 3:
        rights |= _FS_TRUNCATE
    if abi >= 5:
        rights |= _FS_IOCTL_DEV
    return rights


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 where Landlock is missing or disabled."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        version = libc.syscall(
            ctypes.c_long(_SYS_CREATE_RULESET),
            None,
            ctypes.c_size_t(0),
            ctypes.c_uint32(_CREATE_RULESET_VERSION),
        )
    except (OSError, AttributeError, ImportError):
        return 0
    return int(version) if version > 0 else 0


def apply_landlock(policy: Policy, tcp_ports: Sequence[int] = ()) -> int:
    """Restrict this process and everything it ``exec``s to ``policy``; the ABI version.

    Reads: ``policy.read`` and the loader's folders; writes: ``policy.write``; execute:
    ``policy.exec``. With ABI ≥ 4 and ``tcp_ports``, TCP connects only to those ports and no
    TCP bind; with ABI ≥ 6, no signals or abstract UNIX sockets out of the domain. Raises
    :class:`OSError` when the kernel refuses; a no-op (returns 0) without Landlock.
    """
    abi = landlock_abi()
    if abi < 1:
        return 0
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    syscall = libc.syscall
    syscall.restype = ctypes.c_long

    class RulesetAttr(ctypes.Structure):
        _fields_ = [
            ("handled_access_fs", ctypes.c_uint64),
            ("handled_access_net", ctypes.c_uint64),
            ("scoped", ctypes.c_uint64),
        ]

    class PathBeneathAttr(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]

    class NetPortAttr(ctypes.Structure):
        _fields_ = [("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64)]

    def check(result: int, what: str) -> int:
        if result < 0:
            error = ctypes.get_errno()
            raise OSError(error, f"landlock {what}: {os.strerror(error)}")
        return result

    handled = _handled_fs(abi)
    attr = RulesetAttr(handled_access_fs=handled)
    size = 8
    if abi >= 4 and tcp_ports:
        attr.handled_access_net = _NET_BIND_TCP | _NET_CONNECT_TCP
        size = 16
    if abi >= 6:
        attr.scoped = _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL
        size = 24
    ruleset = check(
        syscall(
            ctypes.c_long(_SYS_CREATE_RULESET),
            ctypes.byref(attr),
            ctypes.c_size_t(size),
            ctypes.c_uint32(0),
        ),
        "create_ruleset",
    )
    try:
        read = _FS_READ_FILE | _FS_READ_DIR
        rules: list[tuple[str, int]] = [(path, read) for path in policy.read]
        rules += [(path, read) for path in _LOADER_READ_PATHS]
        rules += [(path, _FS_EXECUTE | _FS_READ_FILE) for path in policy.exec]
        rules += [(path, handled) for path in policy.write]
        for path, access in rules:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # not on this machine: nothing to allow
            try:
                if not stat.S_ISDIR(os.fstat(fd).st_mode):
                    access &= _FILE_RIGHTS
                beneath = PathBeneathAttr(allowed_access=access & handled, parent_fd=fd)
                check(
                    syscall(
                        ctypes.c_long(_SYS_ADD_RULE),
                        ctypes.c_int(ruleset),
                        ctypes.c_int(_RULE_PATH_BENEATH),
                        ctypes.byref(beneath),
                        ctypes.c_uint32(0),
                    ),
                    f"add_rule {path}",
                )
            finally:
                os.close(fd)
        if attr.handled_access_net:
            for port in tcp_ports:
                net = NetPortAttr(allowed_access=_NET_CONNECT_TCP, port=int(port))
                check(
                    syscall(
                        ctypes.c_long(_SYS_ADD_RULE),
                        ctypes.c_int(ruleset),
                        ctypes.c_int(_RULE_NET_PORT),
                        ctypes.byref(net),
                        ctypes.c_uint32(0),
                    ),
                    f"add_rule port {port}",
                )
        check(
            libc.prctl(
                ctypes.c_int(_PR_SET_NO_NEW_PRIVS),
                ctypes.c_ulong(1),
                ctypes.c_ulong(0),
                ctypes.c_ulong(0),
                ctypes.c_ulong(0),
            ),
            "no_new_privs",
        )
        check(
            syscall(ctypes.c_long(_SYS_RESTRICT_SELF), ctypes.c_int(ruleset), ctypes.c_uint32(0)),
            "restrict_self",
        )
    finally:
        os.close(ruleset)
    return abi


def _elf_interpreter(executable: str) -> list[str]:
    """The dynamic loader named in ``executable``'s PT_INTERP header (``[]`` if none)."""
    try:
        with open(executable, "rb") as file:
            header = file.read(64)
            if header[:4] != b"\x7fELF":
                return []
            wide = header[4] == 2
            order = "little" if header[5] == 1 else "big"

            def number(offset: int, size: int) -> int:
                return int.from_bytes(header[offset : offset + size], order)

            if wide:
                table, entry_size, count = number(32, 8), number(54, 2), number(56, 2)
            else:
                table, entry_size, count = number(28, 4), number(42, 2), number(44, 2)
            for index in range(count):
                file.seek(table + index * entry_size)
                entry = file.read(entry_size)
                if int.from_bytes(entry[0:4], order) != 3:  # PT_INTERP
                    continue
                if wide:
                    offset = int.from_bytes(entry[8:16], order)
                    size = int.from_bytes(entry[32:40], order)
                else:
                    offset = int.from_bytes(entry[4:8], order)
                    size = int.from_bytes(entry[16:20], order)
                file.seek(offset)
                name = file.read(size).split(b"\0", 1)[0].decode("utf-8", "replace")
                return [os.path.realpath(name)] if name else []
    except (OSError, ValueError):
        return []
    return []


def project_folders() -> tuple[str, ...]:
    """Where this project's packages are installed (this file is ``<root>/sia/runner/``)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
    return tuple(
        os.path.join(root, name)
        for name in PROJECT_PACKAGES
        if os.path.isfile(os.path.join(root, name, "__init__.py"))
    )


def excluding(roots: Iterable[str], hidden: Iterable[str]) -> list[str]:
    """``roots`` with every ``hidden`` folder cut out of them.

    Landlock rules only add access, so a root that holds a hidden folder is replaced by its
    other entries, level by level down to the hidden folder's siblings.
    """
    hidden = tuple(hidden)
    kept: list[str] = []
    for root in roots:
        if root in hidden:
            continue
        if not any(h.startswith(root.rstrip("/") + "/") for h in hidden):
            kept.append(root)
            continue
        try:
            entries = sorted(os.listdir(root))
        except OSError:
            continue
        kept += excluding([os.path.join(root, entry) for entry in entries], hidden)
    return kept


def _unique(paths: Iterable[str]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for path in paths:
        if path:
            seen[os.path.realpath(os.fspath(path))] = None
    return tuple(seen)
