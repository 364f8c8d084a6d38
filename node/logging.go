package node

import (
	"github.com/rs/zerolog"

	"github.com/meshgw/meshgw/consensus"
)

// InstallLibraryLoggers routes the process-wide loggers of the libraries
// (dragonboat and pebble) into log. Call it once per process, from cmd;
// later calls are no-ops, so in-process multi-agent tests can call it too.
func InstallLibraryLoggers(log zerolog.Logger) {
	consensus.InstallLogger(log)
}
