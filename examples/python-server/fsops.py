"""The fs/* methods of §7, and the path rules they share with process/start's cwd.

Each handler takes (session, Params) and returns the result object, or raises
RpcError. The work is plain blocking os calls: they are quick on a local disk,
and keeping them on the event loop thread keeps this implementation simple.
"""

import os
import re
import shutil
import stat
import urllib.parse

from rpc import (INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST, LIMIT_REACHED, NOT_FOUND,
                 RpcError, b64, invalid_params)

MAX_READ_FILE = 512 * 1024 * 1024  # §7 fs/readFile
MAX_OPEN_HANDLES = 256              # §7 fs/open
MAX_BLOCK = 1024 * 1024             # §7 fs/readBlock
WALK_MAX = {"maxDepth": 64, "maxDirectories": 10_000, "maxEntries": 50_000}

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")


# ---------------------------------------------------------------- paths


class FsPath:
    """A request path: the normalised absolute path, and whether it came as a file: URI
    (results spell paths in the request's form, §7)."""

    def __init__(self, path, uri):
        self.path = path  # str (undecodable bytes as surrogate escapes)
        self.uri = uri

    def spell(self, path):
        """`path` in the form of the request's path."""
        if not self.uri:
            return path
        return "file://" + urllib.parse.quote(os.fsencode(path), safe="/")

    def child(self, name):
        return os.path.join(self.path, name) if self.path != "/" else "/" + name


def normalise(path):
    """Lexical normalisation of §7: drop `.`, let `..` remove the previous component."""
    parts = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/" + "/".join(parts)


def _decode_percent(field, text):
    out = bytearray()
    i = 0
    raw = text.encode("utf-8", "surrogateescape")
    while i < len(raw):
        c = raw[i]
        if c == ord("%"):
            hexpair = raw[i + 1:i + 3]
            if len(hexpair) != 2 or not all(chr(h) in "0123456789abcdefABCDEF" for h in hexpair):
                raise invalid_params(field, f"bad percent escape in file URI: {text!r}")
            byte = int(hexpair, 16)
            if byte == 0:
                raise invalid_params(field, "file URI encodes a NUL byte")
            out.append(byte)
            i += 3
        else:
            out.append(c)
            i += 1
    return os.fsdecode(bytes(out))


def parse_path(field, value):
    """Turns a path param (plain absolute path or [08] file: URI) into an FsPath."""
    if value.startswith("file:"):
        rest = value[len("file:"):]
        if rest.startswith("//"):
            host, slash, rest = rest[2:].partition("/")
            rest = slash + rest
            if host not in ("", "localhost"):
                raise RpcError(INVALID_REQUEST, f"{field}: file URI names another host ({host}); "
                               "only local paths can be used")
        rest = re.split(r"[?#]", rest, maxsplit=1)[0]  # a query or fragment ends the path
        path = _decode_percent(field, rest)
        if not path.startswith("/"):
            path = "/" + path  # file:relative/x is /relative/x, as upstream's URL parser reads it
        return FsPath(normalise(path), True)
    if _SCHEME.match(value) and not value.startswith("/"):
        raise invalid_params(field, f"not a file: URI or an absolute path: {value!r}")
    if "\0" in value:
        raise invalid_params(field, "path contains a NUL byte")
    if not value.startswith("/"):
        raise invalid_params(field, f"path must be absolute, got {json_quote(value)}")
    return FsPath(normalise(value), False)


def json_quote(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def os_error(exc):
    """Maps an OSError by kind (§7): not found -32004; invalid input or permission -32600;
    anything else -32603. The message is the OS text."""
    message = f"{os.strerror(exc.errno)} (os error {exc.errno})" if exc.errno else str(exc)
    if exc.errno == 2:
        return RpcError(NOT_FOUND, message)
    if exc.errno in (1, 13, 22):  # EPERM, EACCES, EINVAL
        return RpcError(INVALID_REQUEST, message)
    return RpcError(INTERNAL_ERROR, message)


def check_sandbox(p):
    """§7 Sandbox: absent, null or full access runs; any other profile is refused."""
    value = p.p.get("sandbox")
    if value is None:
        return
    full = ("danger-full-access", "dangerFullAccess")
    if isinstance(value, str) and value in full:
        return
    if isinstance(value, dict) and any(value.get(k) in full for k in ("type", "mode", "profile")):
        return
    raise RpcError(INVALID_PARAMS, "sandbox profiles are not supported")


def refuse_links(path):
    """followSymlinks: false (§7): lstat every existing component."""
    current = ""
    for part in path.strip("/").split("/"):
        if not part:
            continue
        current += "/" + part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise os_error(exc) from None
        if stat.S_ISLNK(st.st_mode):
            raise RpcError(INVALID_REQUEST, "path contains a symbolic link")


def _path_param(p, name="path"):
    check_sandbox(p)
    fp = parse_path(name, p.str(name))
    return fp


def _follow(p, fp):
    follow = p.bool("followSymlinks", default=True)
    if not follow:
        refuse_links(fp.path)
    return follow


# ---------------------------------------------------------------- methods


def read_file(session, p):
    fp = _path_param(p)
    follow = _follow(p, fp)
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(fp.path, flags)
    except OSError as exc:
        if exc.errno == 40 and not follow:  # ELOOP: the last component is a link
            raise RpcError(INVALID_REQUEST, "path contains a symbolic link") from None
        raise os_error(exc) from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise os_error(IsADirectoryError(21, os.strerror(21)))
        if not stat.S_ISREG(st.st_mode):
            raise RpcError(INVALID_REQUEST, f"{fp.path} is not a regular file")
        chunks, total = [], 0
        while True:
            block = os.read(fd, 1 << 20)
            if not block:
                break
            total += len(block)
            if total > MAX_READ_FILE:
                raise RpcError(INVALID_REQUEST, f"{fp.path} is larger than {MAX_READ_FILE} bytes, "
                               "the most fs/readFile reads")
            chunks.append(block)
        return {"dataBase64": b64(b"".join(chunks))}
    except OSError as exc:
        raise os_error(exc) from None
    finally:
        os.close(fd)


def write_file(session, p):
    fp = _path_param(p)
    data = p.base64("dataBase64")  # checked before the file is touched
    follow = _follow(p, fp)
    flags = os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(fp.path, flags, 0o666)
    except OSError as exc:
        if exc.errno == 40 and not follow:
            raise RpcError(INVALID_REQUEST, "path contains a symbolic link") from None
        raise os_error(exc) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise RpcError(INVALID_REQUEST, f"{fp.path} is not a regular file")
        os.set_blocking(fd, True)
        os.ftruncate(fd, 0)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        return {}
    except OSError as exc:
        raise os_error(exc) from None
    finally:
        os.close(fd)


def create_directory(session, p):
    fp = _path_param(p)
    _follow(p, fp)
    try:
        if p.bool("recursive", default=True):
            os.makedirs(fp.path, exist_ok=True)
        else:
            os.mkdir(fp.path)
    except OSError as exc:
        raise os_error(exc) from None
    return {}


def get_metadata(session, p):
    fp = _path_param(p)
    _follow(p, fp)
    try:
        lst = os.lstat(fp.path)
    except OSError as exc:
        raise os_error(exc) from None
    is_link = stat.S_ISLNK(lst.st_mode)
    target = lst  # what the type, times and size describe: the link's target
    if is_link:
        try:
            target = os.stat(fp.path)
        except OSError:
            target = None  # a broken link: both types false, its own times
    times = target or lst
    return {
        "isDirectory": target is not None and stat.S_ISDIR(target.st_mode),
        "isFile": target is not None and stat.S_ISREG(target.st_mode),
        "isSymlink": is_link,
        # Linux Python 3.11 has no birth time in os.stat: "0 when unknown" (§7).
        "createdAtMs": 0,
        "modifiedAtMs": times.st_mtime_ns // 1_000_000,
        "size": times.st_size,
    }


def read_directory(session, p):
    fp = _path_param(p)
    try:
        with os.scandir(fp.path) as it:
            entries = []
            for entry in it:
                try:
                    st = os.stat(entry.path)  # types follow links
                except OSError:
                    continue  # broken links are left out
                entries.append({"fileName": entry.name, "isDirectory": stat.S_ISDIR(st.st_mode),
                                "isFile": stat.S_ISREG(st.st_mode)})
    except OSError as exc:
        raise os_error(exc) from None
    return {"entries": entries}


def remove(session, p):
    fp = _path_param(p)
    recursive = p.bool("recursive", default=True)
    force = p.bool("force", default=True)
    follow = p.bool("followSymlinks", default=True)
    if not follow:
        if recursive:
            raise RpcError(INTERNAL_ERROR, "fs/remove with followSymlinks: false and recursive is not supported")
        refuse_links(fp.path)
    try:
        st = os.lstat(fp.path)
    except FileNotFoundError as exc:
        if force:
            return {}
        raise os_error(exc) from None
    except OSError as exc:
        raise os_error(exc) from None
    try:
        if stat.S_ISDIR(st.st_mode):
            if recursive:
                shutil.rmtree(fp.path)  # never follows links inside the tree
            else:
                os.rmdir(fp.path)
        else:
            os.unlink(fp.path)  # a link is removed itself, never its target
    except OSError as exc:
        raise os_error(exc) from None
    return {}


def _is_special(mode):
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode))


def _copy_one(src, dst, st):
    """Copies a file with its permission bits, or a link as a link."""
    try:
        dst_st = os.lstat(dst)
    except FileNotFoundError:
        dst_st = None
    if dst_st is not None and stat.S_ISLNK(dst_st.st_mode):
        raise RpcError(INTERNAL_ERROR, f"{dst} is a symbolic link; fs/copy does not write through links")
    if stat.S_ISLNK(st.st_mode):
        if dst_st is not None:
            os.unlink(dst)
        os.symlink(os.readlink(src), dst)
    else:
        shutil.copyfile(src, dst, follow_symlinks=False)
        os.chmod(dst, stat.S_IMODE(st.st_mode))


def copy(session, p):
    check_sandbox(p)
    src = parse_path("sourcePath", p.str("sourcePath"))
    dst = parse_path("destinationPath", p.str("destinationPath"))
    recursive = p.bool("recursive", default=False)
    try:
        st = os.lstat(src.path)
        if _is_special(st.st_mode):
            raise RpcError(INVALID_REQUEST, f"{src.path} is not a regular file, a directory or a link")
        if not stat.S_ISDIR(st.st_mode):
            try:
                dst_st = os.stat(dst.path)
                if (dst_st.st_dev, dst_st.st_ino) == (st.st_dev, st.st_ino):
                    raise RpcError(INVALID_REQUEST, f"{src.path} and {dst.path} are the same file")
            except FileNotFoundError:
                pass
            _copy_one(src.path, dst.path, st)
            return {}
        if not recursive:
            raise RpcError(INVALID_REQUEST, f"{src.path} is a directory; copying it needs recursive: true")
        real_src = os.path.realpath(src.path)
        real_dst = os.path.realpath(dst.path)
        if real_dst == real_src or real_dst.startswith(real_src.rstrip("/") + "/"):
            raise RpcError(INVALID_REQUEST, f"cannot copy {src.path} into itself ({dst.path})")
        # Iterative walk: (source dir, destination dir) pairs.
        stack = [(src.path, dst.path)]
        while stack:
            s_dir, d_dir = stack.pop()
            os.makedirs(d_dir, exist_ok=True)
            with os.scandir(s_dir) as it:
                for entry in it:
                    est = entry.stat(follow_symlinks=False)
                    target = os.path.join(d_dir, entry.name)
                    if stat.S_ISDIR(est.st_mode):
                        stack.append((entry.path, target))
                    elif not _is_special(est.st_mode):
                        _copy_one(entry.path, target, est)
                    # FIFOs, sockets and devices inside a tree are skipped
    except OSError as exc:
        raise os_error(exc) from None
    return {}


def canonicalize(session, p):
    fp = _path_param(p)
    try:
        return {"path": fp.spell(os.path.realpath(fp.path, strict=True))}
    except OSError as exc:
        raise os_error(exc) from None


def fs_open(session, p):
    handle_id = p.str("handleId", max_bytes=32)
    fp = _path_param(p)
    if handle_id in session.handles:
        raise RpcError(INVALID_REQUEST, f"handle {handle_id} is already open")
    if len(session.handles) >= MAX_OPEN_HANDLES:
        raise RpcError(LIMIT_REACHED, f"this session has {MAX_OPEN_HANDLES} open handles, its limit; "
                       "close some with fs/close", {"limit": "maxOpenHandles", "value": MAX_OPEN_HANDLES})
    try:
        fd = os.open(fp.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise os_error(exc) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise RpcError(INVALID_REQUEST, f"{fp.path} is {kind}")
    session.handles[handle_id] = fd
    return {"handleId": handle_id}


def read_block(session, p):
    handle_id = p.str("handleId", max_bytes=32)
    offset = p.u64("offset", required=True)
    length = p.u64("len", required=True)
    fd = session.handles.get(handle_id)
    if fd is None:
        raise RpcError(NOT_FOUND, f"unknown handle {handle_id}")
    if not 1 <= length <= MAX_BLOCK:
        raise RpcError(INVALID_REQUEST, f"len must be in 1..={MAX_BLOCK}, got {length}")
    try:
        size = os.fstat(fd).st_size
        data = os.pread(fd, length, offset) if offset < size else b""
    except OSError as exc:
        raise os_error(exc) from None
    return {"chunk": b64(data), "eof": offset + len(data) >= size}


def fs_close(session, p):
    fd = session.handles.pop(p.str("handleId", max_bytes=32), None)
    if fd is not None:
        os.close(fd)
    return {}


def walk(session, p):
    fp = _path_param(p)
    opts = p.obj("options", required=True)
    limits = {}
    for name, cap in WALK_MAX.items():
        limits[name] = opts.u64(name, required=True)
        if limits[name] > cap:
            raise RpcError(INVALID_REQUEST, f"options.{name} is {limits[name]}, more than {cap}")
    follow_dirs = opts.bool("followDirectorySymlinks", required=True)
    prune_hidden = opts.bool("pruneHiddenDirectories", default=False)
    try:
        root = os.stat(fp.path)
    except OSError as exc:
        raise os_error(exc) from None
    if not stat.S_ISDIR(root.st_mode):
        raise os_error(NotADirectoryError(20, os.strerror(20)))

    entries, errors, truncated = [], [], False
    dirs_read = 0
    # Breadth first: (directory path, depth of its entries, inodes of it and its ancestors).
    queue = [(fp.path, 1, {(root.st_dev, root.st_ino)})] if limits["maxDepth"] > 0 else []
    while queue and not truncated:
        directory, depth, ancestors = queue.pop(0)
        if dirs_read >= limits["maxDirectories"]:
            truncated = True
            break
        dirs_read += 1
        try:
            names = sorted(os.listdir(os.fsencode(directory)))
        except OSError as exc:
            errors.append({"path": fp.spell(directory), "message": f"{os.strerror(exc.errno)} (os error {exc.errno})"})
            continue
        for raw in names:
            name = os.fsdecode(raw)
            path = os.path.join(directory, name)
            try:
                lst = os.lstat(path)
                st = os.stat(path) if stat.S_ISLNK(lst.st_mode) else lst
            except OSError:
                continue  # a broken link, or gone meanwhile
            is_link = stat.S_ISLNK(lst.st_mode)
            if stat.S_ISDIR(st.st_mode):
                if is_link and not follow_dirs:
                    continue
                kind = "directory"
            elif is_link:
                continue  # links to files are left out
            elif stat.S_ISREG(st.st_mode):
                kind = "file"
            else:
                kind = "other"
            if len(entries) >= limits["maxEntries"]:
                truncated = True
                break
            entries.append({"path": fp.spell(path), "kind": kind})
            key = (st.st_dev, st.st_ino)
            if (kind == "directory" and depth < limits["maxDepth"] and key not in ancestors
                    and not (prune_hidden and name.startswith("."))):
                queue.append((path, depth + 1, ancestors | {key}))
    return {"entries": entries, "errors": errors, "truncated": truncated}


METHODS = {
    "fs/readFile": read_file,
    "fs/writeFile": write_file,
    "fs/createDirectory": create_directory,
    "fs/getMetadata": get_metadata,
    "fs/readDirectory": read_directory,
    "fs/remove": remove,
    "fs/copy": copy,
    "fs/canonicalize": canonicalize,
    "fs/open": fs_open,
    "fs/readBlock": read_block,
    "fs/close": fs_close,
    "fs/walk": walk,
}
