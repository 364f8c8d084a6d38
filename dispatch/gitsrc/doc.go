// Package gitsrc gives a runner the files of a Git commit and the Python
// environments its scripts need, cached on local disk.
//
// A Cache keeps, under its directory:
//
//	repos/<sha256(url)>.git   one bare clone per remote URL, fetched with go-git
//	checkouts/<commit>/       the files of one commit, written once, read only after
//	venvs/<key>/              one Python virtual environment per key (commit + dir)
//
// Resolving a reference is cheap: the remote is fetched (all branches and
// tags) at most once per Remote.Poll, and at once when the reference is a
// commit hash the clone does not hold yet; otherwise the reference is read
// from the local clone. When a fetch fails and the reference still resolves
// locally, the last known commit is used (the fetch is retried after the
// next Poll) and the failure is logged once; the caller records the commit
// it ran, so a stale run is never silent.
//
// A checkout is written from the commit's tree into a temporary directory
// and renamed into place, so a half-written one is never used; each file's
// path must be local (no "..", no absolute path) and writes go through an
// os.Root, so a tree cannot write outside its checkout. Its size is bounded
// (Config.MaxCheckoutBytes, Config.MaxFiles). Checkouts and venvs are
// reference-counted while a run uses them and bounded in number
// (Config.MaxCheckouts, Config.MaxVenvs): the least recently used unused
// ones are removed first.
//
// Checkout.File resolves a path inside a checkout for running: it must be
// local, and after following symlinks it must still be a regular file
// inside the checkout.
//
// Credentials (Remote.Username, Remote.Password) are handed to go-git for
// the fetch only; they are never logged nor part of an error.
//
// gitsrc knows nothing of services or the mesh; only dispatch imports it.
package gitsrc
