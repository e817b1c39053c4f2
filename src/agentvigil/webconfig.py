"""TLS and basic auth for our HTTP servers, from node_exporter's web-config file (or keyword arguments).

The file format is the Prometheus exporters' one (``tls_server_config``, ``basic_auth_users``), so one
file can serve node_exporter and agentvigil alike. Everything is checked when the config is loaded: a bad
value raises ``WebConfigError`` (a ``ValueError``) naming the field, and a loaded config is ready to serve.
pyyaml and bcrypt are imported only when a file or a user list asks for them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Python's ssl module verifies every client certificate it asks for, so the two "ask but do not verify"
# policies of the Go toolkit cannot be honoured; they are refused rather than silently tightened.
CLIENT_AUTH_TYPES = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
TLS_KEYS = ("cert_file", "key_file", "client_ca_file", "client_auth_type", "min_version", "max_version")
TOP_KEYS = ("tls_server_config", "basic_auth_users")
_BCRYPT_HASH = re.compile(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}")
CHALLENGE = 'Basic realm="agentvigil"'  # WWW-Authenticate of a 401


class WebConfigError(ValueError):
    """A web config that cannot be served as written; the message names the source and the field."""


@dataclass(frozen=True)
class WebConfig:
    """What a server needs: a TLS context (None = plain HTTP) and a basic-auth checker (None = open)."""

    ssl_context: ssl.SSLContext | None = None
    auth: BasicAuth | None = None


class BasicAuth:
    """Checks ``Authorization: Basic`` headers against bcrypt hashes, in constant time per user."""

    def __init__(self, users: Mapping[str, str], source: str, field: str) -> None:
        try:
            import bcrypt
        except ImportError:
            raise WebConfigError(f"{source}: {field} needs the bcrypt package: pip install agentvigil[web]") from None
        self._bcrypt = bcrypt
        self._users = {user: hashed.encode("ascii") for user, hashed in users.items()}
        # An unknown user still costs one bcrypt check, at the same cost, so timing does not tell names apart.
        cost = int(next(iter(self._users.values()))[4:6]) if self._users else 10
        self._dummy = bcrypt.hashpw(b"", bcrypt.gensalt(rounds=cost))
        # user -> sha256 of the password last verified: a scrape every 15 s need not pay bcrypt each time.
        self._verified: dict[str, bytes] = {}

    def check(self, header: str | None) -> bool:
        if not header or header[:6].lower() != "basic ":
            return False
        try:
            user, sep, password = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8").partition(":")
        except ValueError:  # bad base64 or bad UTF-8 (UnicodeDecodeError is a ValueError)
            return False
        if not sep:
            return False
        secret = password.encode("utf-8")
        digest = hashlib.sha256(secret).digest()
        hashed = self._users.get(user)
        if hashed is not None and hmac.compare_digest(self._verified.get(user, b""), digest):
            return True
        try:
            ok = self._bcrypt.checkpw(secret, hashed if hashed is not None else self._dummy)
        except ValueError:  # bcrypt refuses passwords over 72 bytes
            ok = False
        if ok and hashed is not None:
            self._verified[user] = digest  # bounded: one entry per configured user
            return True
        return False


def load(path: str, source: str | None = None) -> WebConfig:
    """Read and check a web-config YAML file. Relative file names in it are relative to the file, as in
    the exporters. ``source`` prefixes error messages (default: the path)."""
    source = source or path
    try:
        import yaml
    except ImportError:
        raise WebConfigError(f"{source}: the web config file needs the pyyaml package: "
                             "pip install agentvigil[web]") from None
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except OSError as exc:
        raise WebConfigError(f"{source}: cannot read web config file: {exc.strerror or exc}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise WebConfigError(f"{source}: not valid YAML: {exc}") from None
    return parse(data, source, base_dir=os.path.dirname(os.path.abspath(path)))


def parse(data: Any, source: str, base_dir: str = ".") -> WebConfig:
    """Check an already decoded web config (``None`` or ``{}`` = plain HTTP, no auth)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise WebConfigError(f"{source}: expected a mapping at the top level")
    _known_keys(data, TOP_KEYS, source, "")
    tls = data.get("tls_server_config")
    if tls is not None and not isinstance(tls, dict):
        raise WebConfigError(f"{source}: tls_server_config: expected a mapping")
    context = None
    if tls:
        _known_keys(tls, TLS_KEYS, source, "tls_server_config.")
        values = {key: _text(tls.get(key), source, f"tls_server_config.{key}") for key in TLS_KEYS}
        files = {key: os.path.join(base_dir, values[key]) if values[key] else ""
                 for key in ("cert_file", "key_file", "client_ca_file")}
        context = tls_context(files["cert_file"], files["key_file"], files["client_ca_file"],
                              values["client_auth_type"], values["min_version"], values["max_version"],
                              source=source, prefix="tls_server_config.")
    users = data.get("basic_auth_users")
    auth = _basic_auth(users, source, "basic_auth_users") if users else None
    return WebConfig(context, auth)


def from_options(certfile: str | None = None, keyfile: str | None = None, client_cafile: str | None = None,
                 basic_auth: Mapping[str, str] | None = None,
                 source: str = "start_metrics_server") -> WebConfig:
    """The keyword-argument form: ``client_cafile`` means client certificates are required and verified;
    ``basic_auth`` maps user names to bcrypt hashes, as ``basic_auth_users`` does."""
    context = None
    if certfile or keyfile or client_cafile:
        context = tls_context(certfile or "", keyfile or "", client_cafile or "",
                              "RequireAndVerifyClientCert" if client_cafile else "", "", "",
                              source=source, prefix="", names={"cert_file": "certfile", "key_file": "keyfile",
                                                               "client_ca_file": "client_cafile"})
    auth = _basic_auth(basic_auth, source, "basic_auth") if basic_auth else None
    return WebConfig(context, auth)


def tls_context(cert_file: str, key_file: str, client_ca_file: str, client_auth_type: str, min_version: str,
                max_version: str, *, source: str, prefix: str,
                names: Mapping[str, str] | None = None) -> ssl.SSLContext:
    """A server-side SSLContext, every problem reported as ``source: <field>: why``."""
    def name(key: str) -> str:
        return (names or {}).get(key, prefix + key)

    def fail(key: str, why: str) -> WebConfigError:
        return WebConfigError(f"{source}: {name(key)}: {why}")

    if not cert_file or not key_file:
        raise fail("key_file" if cert_file else "cert_file", "both the certificate and the key file are needed")
    auth_type = client_auth_type or "NoClientCert"
    if auth_type not in CLIENT_AUTH_TYPES:
        raise fail("client_auth_type", f"{auth_type!r} is not supported; use one of {', '.join(CLIENT_AUTH_TYPES)}")
    verify = CLIENT_AUTH_TYPES[auth_type]
    if verify != ssl.CERT_NONE and not client_ca_file:
        raise fail("client_ca_file", f"needed to verify client certificates ({auth_type})")
    if client_ca_file and verify == ssl.CERT_NONE:
        raise fail("client_auth_type", "a client CA file is set but client certificates are not verified; "
                                       "set VerifyClientCertIfGiven or RequireAndVerifyClientCert")
    versions = []
    for key, given, default in (("min_version", min_version, "TLS12"), ("max_version", max_version, "TLS13")):
        if (given or default) not in TLS_VERSIONS:
            raise fail(key, f"{given!r} is not one of {', '.join(TLS_VERSIONS)}")
        versions.append(TLS_VERSIONS[given or default])
    if versions[0] > versions[1]:
        raise fail("min_version", "is above max_version")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version, context.maximum_version = versions
    for key, path in (("cert_file", cert_file), ("key_file", key_file), ("client_ca_file", client_ca_file)):
        if path and not os.path.isfile(path):
            raise fail(key, f"no such file: {path}")
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise fail("cert_file", f"cannot load the certificate/key pair ({cert_file}, {key_file}): {exc}") from None
    if client_ca_file:
        try:
            context.load_verify_locations(cafile=client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise fail("client_ca_file", f"cannot load {client_ca_file}: {exc}") from None
    context.verify_mode = verify
    return context


def _basic_auth(users: Any, source: str, field: str) -> BasicAuth:
    if not isinstance(users, Mapping):
        raise WebConfigError(f"{source}: {field}: expected a mapping of user name to bcrypt hash")
    for user, hashed in users.items():
        if not isinstance(user, str) or not user or ":" in user:
            raise WebConfigError(f"{source}: {field}: user name {user!r} must be a non-empty string without ':'")
        if not isinstance(hashed, str) or not _BCRYPT_HASH.fullmatch(hashed):
            raise WebConfigError(f"{source}: {field}.{user}: expected a bcrypt hash ($2b$10$..., as made by "
                                 "htpasswd -nBC 10 USER)")
    return BasicAuth(users, source, field)


def _known_keys(data: Mapping[Any, Any], known: tuple[str, ...], source: str, prefix: str) -> None:
    for key in data:
        if key not in known:
            raise WebConfigError(f"{source}: {prefix}{key}: unknown or unsupported key "
                                 f"(supported: {', '.join(known)})")


def _text(value: Any, source: str, field: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise WebConfigError(f"{source}: {field}: expected a string, got {type(value).__name__}")
    return value
