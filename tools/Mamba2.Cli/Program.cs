using Mamba2.Cli;

return CliApp.Run(args);
