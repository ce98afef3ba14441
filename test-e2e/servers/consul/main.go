// Command consul runs Consul's own command set (agent, services, kv, ...) from the module, so tests
// get the real `consul agent -dev` built from source.
package main

import (
	"fmt"
	"os"

	"github.com/hashicorp/consul/command"
	"github.com/hashicorp/consul/command/cli"
	mcli "github.com/mitchellh/cli"
)

func main() {
	ui := &cli.BasicUI{BasicUi: mcli.BasicUi{Reader: os.Stdin, Writer: os.Stdout, ErrorWriter: os.Stderr}}
	commands := command.RegisteredCommands(ui)
	runner := &mcli.CLI{Name: "consul", Args: os.Args[1:], Commands: commands, HelpWriter: os.Stdout, ErrorWriter: os.Stderr}
	code, err := runner.Run()
	if err != nil {
		fmt.Fprintf(os.Stderr, "consul: %v\n", err)
		os.Exit(1)
	}
	os.Exit(code)
}
