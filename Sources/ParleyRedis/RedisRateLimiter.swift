import Foundation
import Logging
import ParleyCore

/// Token buckets shared by every node: one Redis hash per key, updated by a Lua script, so a burst
/// spread over several nodes still gets exactly `burst` requests through. When Redis cannot be
/// reached, the node falls back to its own in-memory buckets rather than failing every request.
public final class RedisRateLimiter: RateLimiter {
    private let client: RedisClient
    private let prefix: String
    private let fallback = InMemoryRateLimiter()
    private let logger: Logger

    static let script = RedisScript(
        """
        local burst = tonumber(ARGV[1])
        local rate = tonumber(ARGV[2])
        local now = tonumber(ARGV[3])
        local bucket = redis.call('HMGET', KEYS[1], 't', 'u')
        local tokens = tonumber(bucket[1]) or burst
        local updated = tonumber(bucket[2]) or now
        tokens = math.min(burst, tokens + math.max(0, now - updated) / 1000 * rate)
        local wait = 0
        if tokens >= 1 then
            tokens = tokens - 1
        else
            wait = math.max(1, math.ceil((1 - tokens) / rate))
        end
        redis.call('HSET', KEYS[1], 't', tostring(tokens), 'u', tostring(now))
        redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
        return wait
        """
    )

    public init(client: RedisClient, logger: Logger) {
        self.client = client
        self.prefix = client.configuration.keyPrefix + "rate:"
        self.logger = logger
    }

    public func acquire(_ key: String, policy: RateLimitPolicy, now: Date) async -> RateLimitDecision {
        do {
            let reply = try await client.evaluate(
                Self.script,
                keys: [prefix + policy.name + ":" + key],
                arguments: [String(policy.burst), String(max(policy.perSecond, 0.000_001)), String(now.millis)]
            )
            guard let wait = reply.integer else { throw RedisError.unexpectedReply("\(reply)") }
            return wait == 0 ? .allowed : .limited(retryAfterSeconds: Int(wait))
        } catch {
            logger.debug("Redis rate limiter unavailable; using local buckets", metadata: ["parley.error": "\(error)"])
            return await fallback.acquire(key, policy: policy, now: now)
        }
    }
}
