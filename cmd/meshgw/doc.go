// Command meshgw is the agent and the client in one binary: `meshgw agent`
// runs a node; every other subcommand talks to a node's HTTP API.
//
// cmd owns flag parsing, signals and logger setup (including the one-time
// installation of dragonboat's logger factory). Nothing imports cmd.
package main
