import Foundation
import ParleyFuzz

/// Built by scripts/fuzz.sh with `-sanitize=fuzzer,address -DPARLEY_FUZZING`: hands the process to
/// libFuzzer, which calls the harness named by PARLEY_FUZZ_TARGET with each input it makes.
///
/// Built plainly: runs files (or every file of directories) through a harness, to reproduce an
/// input the fuzzer saved:
///
///     parley-fuzz HARNESS FILE|DIRECTORY…
@main
struct FuzzMain {
    static func main() throws {
        #if PARLEY_FUZZING
            let name = ProcessInfo.processInfo.environment["PARLEY_FUZZ_TARGET"] ?? ""
            guard let harness = Harness(rawValue: name) else { usage("PARLEY_FUZZ_TARGET must be one of") }
            Fuzzing.harness = harness
            var argc = CommandLine.argc
            var argv = CommandLine.unsafeArgv
            exit(LLVMFuzzerRunDriver(&argc, &argv, Fuzzing.testOneInput))
        #else
            let arguments = CommandLine.arguments.dropFirst()
            guard let name = arguments.first, let harness = Harness(rawValue: name), arguments.count > 1 else {
                usage("usage: parley-fuzz HARNESS FILE|DIRECTORY…, HARNESS one of")
            }
            var count = 0
            for path in arguments.dropFirst() {
                var isDirectory: ObjCBool = false
                guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { usage("no such file: \(path); harnesses") }
                let files =
                    isDirectory.boolValue
                    ? try FileManager.default.contentsOfDirectory(atPath: path).sorted().map { path + "/" + $0 } : [path]
                for file in files {
                    harness.run(Array(try Data(contentsOf: URL(fileURLWithPath: file))))
                    count += 1
                }
            }
            print("parley-fuzz: \(harness.rawValue): \(count) inputs, no failure")
        #endif
    }

    static func usage(_ message: String) -> Never {
        FileHandle.standardError.write(Data("parley-fuzz: \(message): \(Harness.allCases.map(\.rawValue).joined(separator: ", "))\n".utf8))
        exit(2)
    }
}

#if PARLEY_FUZZING
    /// libFuzzer's entry for programs that have their own `main` (compiler-rt's FuzzerInterface.h).
    @_silgen_name("LLVMFuzzerRunDriver")
    func LLVMFuzzerRunDriver(
        _ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
        _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
    ) -> CInt

    enum Fuzzing {
        nonisolated(unsafe) static var harness: Harness = .resp

        static let testOneInput: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt = { data, size in
            Fuzzing.harness.run(size == 0 || data == nil ? [] : Array(UnsafeBufferPointer(start: data, count: size)))
            return 0
        }
    }

    /// The sanitizer runtime links libFuzzer's own `main` in as well, which calls these two directly.
    @_cdecl("LLVMFuzzerTestOneInput")
    func fuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
        Fuzzing.testOneInput(data, size)
    }

    @_cdecl("LLVMFuzzerInitialize")
    func fuzzerInitialize(_ argc: UnsafeMutablePointer<CInt>?, _ argv: UnsafeMutableRawPointer?) -> CInt {
        let name = ProcessInfo.processInfo.environment["PARLEY_FUZZ_TARGET"] ?? ""
        guard let harness = Harness(rawValue: name) else { FuzzMain.usage("PARLEY_FUZZ_TARGET must be one of") }
        Fuzzing.harness = harness
        return 0
    }
#endif
