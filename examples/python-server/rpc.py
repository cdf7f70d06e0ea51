"""JSON-RPC helpers: strict frame parsing (§3), errors and typed param access.

Nothing here knows about processes or files; server.py and fsops.py build on it.
"""

import base64
import binascii
import json

# Error codes of §3.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
NOT_FOUND = -32004
LIMIT_REACHED = -32005

MAX_JSON_VALUES = 262_144  # §3 [08]: more values than this is a parse error


class RpcError(Exception):
    """An error answer: raise it from a handler and the dispatcher sends it."""

    def __init__(self, code, message, data=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_json(self):
        err = {"code": self.code, "message": self.message}
        if self.data is not None:
            err["data"] = self.data
        return err


def invalid_params(field, reason):
    """-32602 naming the field, e.g. `invalid params: argv: must not be empty`."""
    if field:
        return RpcError(INVALID_PARAMS, f"invalid params: {field}: {reason}")
    return RpcError(INVALID_PARAMS, f"invalid params: {reason}")


class ParseError(Exception):
    pass


def _no_duplicates(pairs):
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise ParseError(f"duplicate key `{key}`")
        obj[key] = value
    return obj


def _no_constants(name):
    # Python's json accepts NaN and Infinity; JSON does not.
    raise ParseError(f"invalid JSON value {name}")


def _count_values(value):
    """Counts every JSON value once, containers included, object keys not (§3)."""
    count, stack = 0, [value]
    while stack:
        v = stack.pop()
        count += 1
        if count > MAX_JSON_VALUES:
            return count
        if isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return count


def parse_frame(text):
    """Parses one inbound message; raises ParseError with the parser's message."""
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except ParseError:
        raise
    except (ValueError, RecursionError) as exc:
        raise ParseError(str(exc)) from None
    if _count_values(value) > MAX_JSON_VALUES:
        raise ParseError(f"message holds more than {MAX_JSON_VALUES} JSON values")
    return value


def dumps(message):
    """Compact JSON, as the server sends it."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


def _type_name(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean `{str(value).lower()}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{value}`"
    if isinstance(value, str):
        return f"string {json.dumps(value)}"
    if isinstance(value, list):
        return "sequence"
    return "map"


class Params:
    """Typed access to a request's params object; every problem is a -32602 naming the field."""

    MISSING = object()

    def __init__(self, params):
        self.p = params

    def _get(self, name, required):
        value = self.p.get(name, Params.MISSING)
        if value is Params.MISSING or (value is None and not required):
            if required:
                raise invalid_params(name, f"missing field `{name}`")
            return Params.MISSING
        return value

    def str(self, name, required=True, default=None, max_bytes=None):
        value = self._get(name, required)
        if value is Params.MISSING:
            return default
        if not isinstance(value, str):
            raise invalid_params(name, f"invalid type: {_type_name(value)}, expected a string")
        if max_bytes is not None and len(value.encode()) > max_bytes:
            raise invalid_params(name, f"must be at most {max_bytes} bytes, got {len(value.encode())}")
        return value

    def bool(self, name, default=False, required=False):
        value = self._get(name, required)
        if value is Params.MISSING:
            return default
        if not isinstance(value, bool):
            raise invalid_params(name, f"invalid type: {_type_name(value)}, expected a boolean")
        return value

    def u64(self, name, default=0, required=False, maximum=2**64 - 1):
        value = self._get(name, required)
        if value is Params.MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
            raise invalid_params(name, f"invalid value: {_type_name(value)}, expected an integer in 0..={maximum}")
        return value

    def str_list(self, name, required=True, default=None):
        value = self._get(name, required)
        if value is Params.MISSING:
            return default
        if not isinstance(value, list):
            raise invalid_params(name, f"invalid type: {_type_name(value)}, expected a sequence")
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise invalid_params(f"{name}[{i}]", f"invalid type: {_type_name(item)}, expected a string")
        return value

    def str_map(self, name, required=False, default=None):
        value = self._get(name, required)
        if value is Params.MISSING:
            return default
        if not isinstance(value, dict):
            raise invalid_params(name, f"invalid type: {_type_name(value)}, expected a map")
        for key, item in value.items():
            if not isinstance(item, str):
                raise invalid_params(f"{name}.{key}", f"invalid type: {_type_name(item)}, expected a string")
        return value

    def obj(self, name, required=False):
        value = self._get(name, required)
        if value is Params.MISSING:
            return None
        if not isinstance(value, dict):
            raise invalid_params(name, f"invalid type: {_type_name(value)}, expected a map")
        return Params(value)

    def base64(self, name, required=True):
        value = self.str(name, required=required, default="")
        try:
            return base64.b64decode(value.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
            raise invalid_params(name, f"not base64: {exc}") from None


def b64(data):
    return base64.b64encode(data).decode("ascii")
