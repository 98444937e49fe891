//! Redis Cluster's key-to-slot function (CRC16-CCITT/XMODEM of the key, or of its hash tag,
//! modulo 16384), for routing and for tests that check how keys spread.

/// The cluster slot of `key`: when the key has a non-empty `{…}` hash tag, only the tag is
/// hashed, so keys sharing a tag share a slot.
///
/// ```
/// use palisade_core::redis::key_slot;
///
/// assert_eq!(key_slot(b"foo"), 12182); // as CLUSTER KEYSLOT foo
/// assert_eq!(key_slot(b"palisade:dlq:{q}:due"), key_slot(b"palisade:dlq:{q}:entries"));
/// ```
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    crc16(hashed) % 16384
}

fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_redis() {
        // Values from CLUSTER KEYSLOT on Redis 7.
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_ne!(key_slot(b"foo{}{bar}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b""), 0);
    }
}
