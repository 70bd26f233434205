using Mamba2.Model.Tensors;

namespace Mamba2.Model.Ops.Ssd;

/// <summary>
/// The flag word every SSD kernel takes in its push constants: one meaning per bit in all of them. The GLSL twin
/// is shaders/include/ssd_flags.glsl (SSD_D_HEAD, ...); a test fails when the two disagree.
/// </summary>
[Flags]
internal enum SsdFlags : uint
{
    None = 0,
    DHead = 1,
    DHeadDim = 2,
    DToken = 4,
    Z = 8,
    SaveUngated = 16,
    Mirrored = 32,
    Accumulate = 64,
    DtBias = 128,
    DtSoftplus = 256,
    InitialStates = 512,
    DFinalStates = 1024,
    DInitialStates = 2048,
    WholeCb = 4096,
    DdParts = 8192,
}

internal static class SsdFlagsExtensions
{
    /// <summary>The D bit for a skip tensor of shape (h), (h, p) or (b, L, h); none without one.</summary>
    public static SsdFlags ForD(Tensor? d) => d switch
    {
        null => SsdFlags.None,
        { Rank: 1 } => SsdFlags.DHead,
        { Rank: 2 } => SsdFlags.DHeadDim,
        _ => SsdFlags.DToken,
    };

    public static SsdFlags If(this SsdFlags flag, bool condition) => condition ? flag : SsdFlags.None;
}
