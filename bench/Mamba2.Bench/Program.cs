using BenchmarkDotNet.Running;

// Host-side costs of the runtime (recording, submission, transfers, pipeline creation). GPU kernel speed is
// measured with GPU timestamps by `mamba2 bench`, not here.
BenchmarkSwitcher.FromAssembly(typeof(Mamba2.Bench.DispatchBenchmarks).Assembly).Run(args);
