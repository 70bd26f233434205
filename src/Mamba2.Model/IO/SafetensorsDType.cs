namespace Mamba2.Model.IO;

/// <summary>The safetensors element types this project reads and writes; member names match the header strings.</summary>
public enum SafetensorsDType
{
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
}
