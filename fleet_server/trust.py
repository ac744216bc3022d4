"""The fleet's root of trust as the API and the MQTT side use it: publish the root chain, rotate the signing key.

A rotation (``edgefleet keys rotate``, ``POST /api/keys/rotate``) makes a new
signing key and root N+1 (:meth:`fleet_server.keys.KeyRing.rotate`),
publishes the root chain retained on :data:`fleet_protocol.topics.ROOT_TOPIC`
and re-issues every device's desired state signed with the new key; devices
refuse the old key once they hold the new root. Only public keys leave here;
the keys themselves stay in the :class:`~fleet_server.keys.KeyRing`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from fleet_protocol import messages, topics
from fleet_protocol.root import RootDocument
from fleet_protocol.signing import PublicKey

from .desired import DesiredStates
from .keys import KeyRing


class TrustRoot:
    """``publish(topic, payload, qos=, retain=) -> bool`` is the broker link's (False while disconnected)."""

    def __init__(self, *, keys: KeyRing, desired: DesiredStates, publish: Callable[..., bool]):
        self._keys = keys
        self._desired = desired
        self._publish = publish
        self._rotation = threading.Lock()

    def signing_key(self) -> PublicKey:
        """The public half of the key bundles and desired state are signed with now."""
        return self._keys.signing_key.public_key

    def root(self) -> dict:
        """The current root: its version, expiry, key ids, threshold, the signed document and the chain length."""
        signed = self._keys.root
        doc = RootDocument.from_dict(signed["signed"])
        return {"version": doc.version, "expires": doc.expires,
                "root_keyids": [PublicKey.from_hex(k).keyid for k in doc.root_keys],
                "root_threshold": doc.root_threshold,
                "signing_keyids": [PublicKey.from_hex(k).keyid for k in doc.signing_keys],
                "signing_keys": list(doc.signing_keys), "root": signed, "chain_length": len(self._keys.roots)}

    def rotate(self) -> dict:
        """New signing key and root N+1; publish the root chain, then re-issue every desired state with the key.
        Returns :meth:`root` after the rotation."""
        with self._rotation:
            self._keys.rotate()
            self.publish_roots()
            self._desired.rotate()
            return self.root()

    def publish_roots(self) -> bool:
        """Publish every root (oldest first) retained, so devices at any version can walk to the newest."""
        return self._publish(topics.ROOT_TOPIC, messages.encode_root_chain(self._keys.roots), qos=1, retain=True)
