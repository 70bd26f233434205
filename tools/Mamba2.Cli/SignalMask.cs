using System.Runtime.InteropServices;

namespace Mamba2.Cli;

/// <summary>
/// The calling thread's signal mask. A signal blocked there stays pending, and a handler registered for it never
/// runs: a rank that inherits a blocked SIGUSR1 (a job runner's mask, passed on by a launcher that does not clear it)
/// would train on after mpirun forwards the stop.
/// </summary>
internal static partial class SignalMask
{
    /// <summary>SIGUSR1's number on Linux (.NET takes raw numbers on Unix).</summary>
    public const int Usr1 = 10;

    private const int Unblock = 1;   // SIG_UNBLOCK (Linux)

    /// <summary>Unblocks <paramref name="signal"/> on this thread (Linux; nothing elsewhere): the process then takes it here.</summary>
    public static void Open(int signal)
    {
        if (!OperatingSystem.IsLinux())
        {
            return;
        }

        var set = new byte[128];   // glibc's sigset_t; signal n is bit n - 1
        set[(signal - 1) / 8] |= (byte)(1 << ((signal - 1) % 8));
        if (pthread_sigmask(Unblock, set, IntPtr.Zero) != 0)
        {
            throw new InvalidOperationException($"pthread_sigmask failed to unblock signal {signal}.");
        }
    }

    [LibraryImport("libc", EntryPoint = "pthread_sigmask")]
    private static partial int pthread_sigmask(int how, byte[] set, IntPtr oldSet);
}
