// Package secretbox owns the encryption at rest of the secrets a cluster
// keeps in its replicated state: a keyring of AES-256-GCM keys, the sealed
// value format, how keys are derived from a cluster secret, and the key
// file format.
//
// A sealed value is "msb1" || key ID (8 bytes) || nonce (12 bytes) ||
// ciphertext+tag. The key ID is a hash of the key (it says which key of
// the keyring opens the value and reveals nothing of it), the nonce is
// random per seal, and the additional data binds the value to where it is
// stored (node passes "cluster/name"), so a ciphertext copied under another
// secret's name does not open. The first key of a Keyring seals; every key
// opens. Rotation is therefore: add the new key first on every node, re-put
// (or rewrap) the secrets, then drop the old key.
//
// The keys never live in the replicated state: node derives them from the
// gossip keyring (-encrypt: DeriveKey with the gossip key) or reads them
// from a key file (-secrets-key-file, ParseKeyFile). A snapshot or a read
// of the state shows sealed values only.
//
// secretbox imports no meshgw package; only node imports it.
package secretbox
