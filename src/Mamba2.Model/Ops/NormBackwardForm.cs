namespace Mamba2.Model.Ops;

/// <summary>
/// How <see cref="RmsNorm"/>'s backward runs: fused (one pass per block of <see cref="BlockRows"/> rows writes dx and dz
/// and sums the block's weight gradient) or split (dx and dz per row, then a second pass over blocks of rows reads dy,
/// x and z again for the weight gradient's partial sums). Either way the partials are added in a fixed order.
/// </summary>
public sealed record NormBackwardForm(bool Fused, int BlockRows)
{
    /// <summary>The environment variable of <see cref="OpTuning.NormBackward"/>: "fused" or "split", optionally ",ROWS".</summary>
    public const string EnvironmentVariable = "MAMBA2_RMSNORM_BWD";

    /// <summary>The default: fused over blocks of 16 rows (docs/PERF.md).</summary>
    public static readonly NormBackwardForm Default = new(true, 16);

    /// <summary>The split form with its blocks of 64 rows.</summary>
    public static readonly NormBackwardForm Split = new(false, 64);

    /// <summary>Parses "fused", "split", "fused,ROWS" or "split,ROWS"; the message names <see cref="EnvironmentVariable"/>.</summary>
    public static NormBackwardForm Parse(string text)
    {
        var parts = text.Split(',', StringSplitOptions.TrimEntries);
        var form = parts[0].ToLowerInvariant() switch
        {
            "fused" => Default,
            "split" => Split,
            _ => null,
        };
        if (form is null || parts.Length > 2)
        {
            throw new ArgumentException($"{EnvironmentVariable}={text}: expected fused or split, optionally followed by ,ROWS.");
        }

        if (parts.Length == 2)
        {
            if (!int.TryParse(parts[1], out var rows) || rows < 1 || rows > 4096)
            {
                throw new ArgumentException($"{EnvironmentVariable}={text}: ROWS must be an integer from 1 to 4096.");
            }

            form = form with { BlockRows = rows };
        }

        return form;
    }
}
