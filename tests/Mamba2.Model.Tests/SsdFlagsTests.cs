using System.Text.RegularExpressions;
using Mamba2.Model.Ops.Ssd;
using Xunit;

namespace Mamba2.Model.Tests;

/// <summary>The SSD kernels' flag bits are written twice, in C# (SsdFlags) and GLSL (ssd_flags.glsl): they must agree.</summary>
public class SsdFlagsTests
{
    [Fact]
    public void EveryFlagHasTheSameBitInCSharpAndGlsl()
    {
        var glsl = ShaderSource("include/ssd_flags.glsl");
        var defines = Regex.Matches(glsl, @"^#define\s+SSD_(\w+)\s+(\d+)u\b", RegexOptions.Multiline)
            .ToDictionary(m => m.Groups[1].Value, m => uint.Parse(m.Groups[2].Value));
        var members = Enum.GetValues<SsdFlags>().Where(f => f != SsdFlags.None)
            .ToDictionary(f => Regex.Replace(f.ToString(), "(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_").ToUpperInvariant(), f => (uint)f);
        Assert.NotEmpty(defines);
        Assert.Equal(members.OrderBy(kv => kv.Key), defines.OrderBy(kv => kv.Key));
        Assert.Equal(members.Count, members.Values.Distinct().Count());
        Assert.All(members.Values, v => Assert.True(System.Numerics.BitOperations.IsPow2(v), $"{v} is not one bit"));
    }

    [Fact]
    public void DFlagFollowsTheSkipTensorsShape()
    {
        Assert.Equal(SsdFlags.None, SsdFlagsExtensions.ForD(null));
        Assert.Equal(SsdFlags.Mirrored, SsdFlags.Mirrored.If(true));
        Assert.Equal(SsdFlags.None, SsdFlags.Mirrored.If(false));
    }

    /// <summary>A shader source of this checkout, embedded in the test assembly (published tests run anywhere).</summary>
    internal static string ShaderSource(string relative)
    {
        var name = $"glsl/{relative}";
        using var stream = typeof(SsdFlagsTests).Assembly.GetManifestResourceStream(name)
            ?? throw new FileNotFoundException($"{name} is not embedded in the test assembly.");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }
}
