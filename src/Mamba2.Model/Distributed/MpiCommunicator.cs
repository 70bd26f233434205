using System.Runtime.InteropServices;

namespace Mamba2.Model.Distributed;

/// <summary>
/// MPI_COMM_WORLD through Open MPI's C library, bound by hand: the few calls training needs. MPI.NET 1.4.0 (the
/// package on NuGet) binds msmpi.dll with MS-MPI's integer handles, which Open MPI's (pointers to its predefined
/// objects) are not. Every collective runs under a watchdog: where another rank has died or hangs, MPI itself
/// waits forever, so after <see cref="Timeout"/> (env MAMBA2_MPI_TIMEOUT_S, default 600) this rank says so and
/// exits, and mpirun ends the rest.
/// </summary>
internal sealed unsafe class MpiCommunicator : Communicator
{
    private const string Library = "libmpi.so.40";
    private static readonly IntPtr InPlace = 1;   // Open MPI's MPI_IN_PLACE
    private static MpiCommunicator? _world;

    private readonly IntPtr _comm;
    private readonly IntPtr _float;
    private readonly IntPtr _double;
    private readonly IntPtr _sum;
    private readonly delegate* unmanaged<IntPtr, IntPtr, int, IntPtr, IntPtr, IntPtr, int> _allreduce;
    private readonly delegate* unmanaged<IntPtr, int> _barrier;
    private readonly delegate* unmanaged<IntPtr, int, int> _abort;
    private readonly delegate* unmanaged<int> _finalize;
    private bool _disposed;

    private MpiCommunicator(IntPtr lib)
    {
        IntPtr Export(string name) => NativeLibrary.TryGetExport(lib, name, out var a) ? a
            : throw new PlatformNotSupportedException($"{Library} has no {name}: only Open MPI's library is bound (Debian: openmpi-bin, libopenmpi3).");
        _comm = Export("ompi_mpi_comm_world");
        _float = Export("ompi_mpi_float");
        _double = Export("ompi_mpi_double");
        _sum = Export("ompi_mpi_op_sum");
        _allreduce = (delegate* unmanaged<IntPtr, IntPtr, int, IntPtr, IntPtr, IntPtr, int>)Export("MPI_Allreduce");
        _barrier = (delegate* unmanaged<IntPtr, int>)Export("MPI_Barrier");
        _abort = (delegate* unmanaged<IntPtr, int, int>)Export("MPI_Abort");
        _finalize = (delegate* unmanaged<int>)Export("MPI_Finalize");
        var initialized = (delegate* unmanaged<int*, int>)Export("MPI_Initialized");
        var init = (delegate* unmanaged<int*, byte***, int, int*, int>)Export("MPI_Init_thread");
        var commRank = (delegate* unmanaged<IntPtr, int*, int>)Export("MPI_Comm_rank");
        var commSize = (delegate* unmanaged<IntPtr, int*, int>)Export("MPI_Comm_size");
        int flag = 0, rank = 0, size = 0, provided = 0;
        Check(initialized(&flag), "MPI_Initialized");
        if (flag == 0)
        {
            // Serialized: the gradient sums run on a worker thread while the main one records, never both in MPI.
            Check(init(null, null, ThreadSerialized, &provided), "MPI_Init_thread");
            if (provided < ThreadSerialized)
            {
                throw new PlatformNotSupportedException($"{Library} gives thread level {provided}; the gradient sums need MPI_THREAD_SERIALIZED ({ThreadSerialized}).");
            }
        }

        Check(commRank(_comm, &rank), "MPI_Comm_rank");
        Check(commSize(_comm, &size), "MPI_Comm_size");
        Rank = rank;
        Size = size;
        LocalRank = int.TryParse(Environment.GetEnvironmentVariable("OMPI_COMM_WORLD_LOCAL_RANK"), out var local) ? local : rank;
        LocalSize = int.TryParse(Environment.GetEnvironmentVariable("OMPI_COMM_WORLD_LOCAL_SIZE"), out var localSize) ? localSize : 1;
        Timeout = TimeSpan.FromSeconds(double.TryParse(Environment.GetEnvironmentVariable("MAMBA2_MPI_TIMEOUT_S"), System.Globalization.CultureInfo.InvariantCulture, out var s) && s > 0 ? s : 600);
    }

    public override int Rank { get; }

    public override int Size { get; }

    public override int LocalRank { get; }

    public override int LocalSize { get; }

    /// <summary>How long one collective may wait for the other ranks.</summary>
    public TimeSpan Timeout { get; }

    /// <summary>The world if this process has initialized it and not yet finalized it.</summary>
    public static MpiCommunicator? Current => _world is { _disposed: false } w ? w : null;

    /// <summary>The world, initialized once per process (MPI allows one MPI_Init).</summary>
    public static MpiCommunicator World()
    {
        if (_world is { _disposed: false })
        {
            return _world;
        }

        if (_world is not null)
        {
            throw new InvalidOperationException("MPI was finalized in this process; it cannot be initialized again.");
        }

        IntPtr lib;
        try
        {
            lib = Dlopen(Library, RtldNow | RtldGlobal);   // global: Open MPI's plugins resolve its symbols through it
        }
        catch (EntryPointNotFoundException e)
        {
            throw new PlatformNotSupportedException($"mpirun started this process, but {Library} cannot be loaded here ({e.Message}).", e);
        }

        if (lib == IntPtr.Zero)
        {
            throw new PlatformNotSupportedException($"mpirun started this process, but {Library} (Open MPI) cannot be loaded: install openmpi-bin (Debian), or run without mpirun.");
        }

        _world = new MpiCommunicator(lib);
        // mpirun ends the other ranks with SIGTERM when one fails: each says why it stops (the failing rank said what).
        var (rank, size) = (_world.Rank, _world.Size);
        _terminated = PosixSignalRegistration.Create(PosixSignal.SIGTERM, _ =>
            Console.Error.WriteLine($"rank {rank} of {size}: stopped by mpirun (another rank ended, its message is above, or the job was interrupted)."));
        return _world;
    }

    private static PosixSignalRegistration? _terminated;

    public override void SumInPlace(Span<float> values)
    {
        fixed (float* p = values)
        {
            AllReduce(p, values.Length, sizeof(float), _float);
        }
    }

    public override void SumInPlace(Span<double> values)
    {
        fixed (double* p = values)
        {
            AllReduce(p, values.Length, sizeof(double), _double);
        }
    }

    private void AllReduce(void* data, int count, int elementSize, IntPtr type)
    {
        const int Piece = 1 << 28;   // MPI counts are ints
        using var watch = Watch("an all-reduce");
        for (var at = 0; at < count; at += Piece)
        {
            Check(_allreduce(InPlace, (IntPtr)((byte*)data + (long)at * elementSize), Math.Min(Piece, count - at), type, _sum, _comm), "MPI_Allreduce");
        }
    }

    public override void Barrier()
    {
        using var watch = Watch("a barrier");
        Check(_barrier(_comm), "MPI_Barrier");
    }

    public override void Abort(int exitCode)
    {
        Console.Out.Flush();
        Console.Error.Flush();
        _abort(_comm, exitCode);
        Exit(exitCode);   // MPI_Abort does not return; this is for a library that does
    }

    public override void Dispose()
    {
        if (!_disposed)
        {
            Barrier();   // every rank is done (MPI_Finalize need not wait, and mpirun ends a job at its first non-zero exit)
            _disposed = true;
            _finalize();
        }

        base.Dispose();
    }

    private Timer Watch(string what) => new(_ =>
    {
        Console.Error.WriteLine($"rank {Rank} of {Size}: {what} waited {Timeout.TotalSeconds:F0} s for the other ranks (one has died or hangs; MAMBA2_MPI_TIMEOUT_S sets the limit); ending the job.");
        Console.Error.Flush();
        Exit(75);
    }, null, Timeout, System.Threading.Timeout.InfiniteTimeSpan);

    private static void Check(int code, string call)
    {
        if (code != 0)
        {
            throw new IOException($"{call} failed with MPI error {code}.");
        }
    }

    // The process ends at once: a rank blocked in MPI cannot run .NET's shutdown, and mpirun ends the others.
    private static void Exit(int code) => _exit(code);

    private const int ThreadSerialized = 2;   // MPI_THREAD_SERIALIZED in Open MPI's mpi.h
    private const int RtldNow = 2;
    private const int RtldGlobal = 0x100;

    [DllImport("libc", EntryPoint = "dlopen")]
    private static extern IntPtr Dlopen(string file, int mode);

    [DllImport("libc", EntryPoint = "_exit")]
    private static extern void _exit(int status);
}
