using Mamba2.Tests;
using Xunit;

[assembly: AssemblyFixture(typeof(GpuFixture))]
[assembly: FailOnValidationMessages]
[assembly: CollectionBehavior(DisableTestParallelization = true)]
