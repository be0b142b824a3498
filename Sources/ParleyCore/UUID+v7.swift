import Foundation

extension UUID {
    /// A time-ordered UUID (RFC 9562 version 7): 48 bits of Unix milliseconds, then random bits.
    /// Time-ordered keys keep B-tree inserts at the right edge of the index.
    public static func v7(now: Date = .now) -> UUID {
        let millis = UInt64(max(0, now.timeIntervalSince1970 * 1000))
        var rng = SystemRandomNumberGenerator()
        let randA = rng.next() as UInt64
        let randB = rng.next() as UInt64
        return UUID(
            uuid: (
                UInt8(truncatingIfNeeded: millis >> 40),
                UInt8(truncatingIfNeeded: millis >> 32),
                UInt8(truncatingIfNeeded: millis >> 24),
                UInt8(truncatingIfNeeded: millis >> 16),
                UInt8(truncatingIfNeeded: millis >> 8),
                UInt8(truncatingIfNeeded: millis),
                0x70 | UInt8(truncatingIfNeeded: randA >> 60),
                UInt8(truncatingIfNeeded: randA >> 52),
                0x80 | UInt8(truncatingIfNeeded: randA >> 46) & 0x3F,
                UInt8(truncatingIfNeeded: randA >> 38),
                UInt8(truncatingIfNeeded: randB >> 40),
                UInt8(truncatingIfNeeded: randB >> 32),
                UInt8(truncatingIfNeeded: randB >> 24),
                UInt8(truncatingIfNeeded: randB >> 16),
                UInt8(truncatingIfNeeded: randB >> 8),
                UInt8(truncatingIfNeeded: randB)
            ))
    }

    /// Lower-case canonical form, the one used on the wire and in the stores. Written by hand:
    /// Foundation's `uuidString` goes through `printf`, and ids are formatted for every frame.
    public var lowercased: String {
        let digits: StaticString = "0123456789abcdef"
        return withUnsafeBytes(of: uuid) { bytes in
            String(unsafeUninitializedCapacity: 36) { out in
                var position = 0
                digits.withUTF8Buffer { hex in
                    for (index, byte) in bytes.enumerated() {
                        if index == 4 || index == 6 || index == 8 || index == 10 {
                            out[position] = UInt8(ascii: "-")
                            position += 1
                        }
                        out[position] = hex[Int(byte >> 4)]
                        out[position + 1] = hex[Int(byte & 0x0F)]
                        position += 2
                    }
                }
                return 36
            }
        }
    }

    /// Parses the canonical 8-4-4-4-12 hex form in either case (what `UUID(uuidString:)` accepts),
    /// without going through `scanf`. Nil for anything else.
    public init?(canonical text: some StringProtocol) {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(16)
        var high: UInt8?
        var count = 0
        for character in text.utf8 {
            count += 1
            if count == 9 || count == 14 || count == 19 || count == 24 {
                guard character == UInt8(ascii: "-") else { return nil }
                continue
            }
            let value: UInt8
            switch character {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): value = character - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): value = character - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): value = character - UInt8(ascii: "A") + 10
            default: return nil
            }
            if let first = high {
                bytes.append(first << 4 | value)
                high = nil
            } else {
                high = value
            }
        }
        guard count == 36, bytes.count == 16 else { return nil }
        self = bytes.withUnsafeBytes { $0.loadUnaligned(as: UUID.self) }
    }
}

extension Date {
    /// Milliseconds since 1970, the precision every store keeps.
    public var millis: Int64 { Int64((timeIntervalSince1970 * 1000).rounded(.down)) }

    /// This time at millisecond precision, as it will read back from a store.
    public var truncatedToMillis: Date { Date(timeIntervalSince1970: TimeInterval(millis) / 1000) }
}
