namespace Mamba2.Cli;

/// <summary>An SSD problem (and the Mamba2 layer around it: d_model = h p / expand 2).</summary>
internal sealed record BenchShape(int Batch, int SeqLen, int Heads, int HeadDim, int Groups, int DState, int Chunk)
{
    public int DModel => Heads * HeadDim / 2;

    public long Tokens => (long)Batch * SeqLen;

    public override string ToString() => $"b{Batch} L{SeqLen} h{Heads} p{HeadDim} g{Groups} n{DState} Q{Chunk}";
}

/// <summary>Named shape sets: what `bench --preset` runs, with the ops and repetitions that suit it.</summary>
internal sealed record BenchPreset(string Name, IReadOnlyList<BenchShape> Shapes, IReadOnlyList<string> Ops, int Warmup, int Repeats)
{
    public static readonly IReadOnlyList<string> AllOps = ["ssd", "bidir", "naive", "layer", "norm", "conv", "gemm"];

    public static BenchPreset Get(string name) => name switch
    {
        // Small enough for the CPU driver in CI time, every op kind present.
        "quick" => new(name, [new(1, 256, 4, 16, 1, 16, 64)], AllOps, 1, 3),
        // mamba2-370m's layer: the comparison shape of the issues and of mamba_ssm's published timings.
        "370m" => new(name, [new(8, 2048, 32, 64, 1, 128, 256)], AllOps, 3, 20),
        "long" => new(name, [new(2, 16384, 32, 64, 1, 128, 256)], AllOps, 3, 10),
        // The Bi-Mamba2 paper's sweep: b2 h4 p16 g4 n16 chunk 128 over L = 2 .. 8192.
        "bimamba" => new(name, [.. Enumerable.Range(1, 13).Select(k => new BenchShape(2, 1 << k, 4, 16, 4, 16, 128))], ["ssd", "bidir", "naive"], 3, 20),
        _ => throw new ArgumentException($"--preset must be quick, 370m, long or bimamba, got '{name}'."),
    };
}
