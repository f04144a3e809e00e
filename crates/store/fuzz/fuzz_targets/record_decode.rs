//! Fuzzes the commit-log record decoder (and the other on-disk decoders): no input may panic,
//! and every record that decodes re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rocketlog_store::record::{decode, encode, seal, Record};
use rocketlog_store::AppendMessage;

fuzz_target!(|data: &[u8]| {
    match decode(data) {
        Ok(Record::Message(v)) => {
            let size = v.size as usize;
            assert!(size <= data.len());
            let msg = AppendMessage {
                topic: v.topic.to_owned(),
                queue_id: v.queue_id,
                flags: v.flags,
                tag: v.tag.map(str::to_owned),
                keys: v.keys().map(str::to_owned).collect(),
                message_id: v.message_id.to_owned(),
                born_timestamp_ms: v.born_timestamp_ms,
                born_host: v.born_host.to_owned(),
                store_host: v.store_host.to_owned(),
                reconsume_times: v.reconsume_times,
                prepared_transaction_offset: v.prepared_transaction_offset,
                properties: v
                    .properties()
                    .map(|(k, val)| (k.to_owned(), val.to_owned()))
                    .collect(),
                body: v.body.to_vec(),
            };
            let mut buf = Vec::new();
            let crc = encode(&msg, &mut buf).expect("a decoded record re-encodes");
            seal(
                &mut buf,
                crc,
                v.queue_offset,
                v.physical_offset,
                v.store_timestamp_ms,
            );
            assert_eq!(&buf[..], &data[..size]);
        }
        Ok(Record::Filler { size, .. }) => {
            assert!(size as usize >= rocketlog_store::record::FILLER_LEN)
        }
        Err(_) => {}
    }
    let _ = rocketlog_store::checkpoint::Checkpoint::decode(data);
    let _ = rocketlog_store::consume_queue::CqEntry::decode(data);
    let _ = rocketlog_store::index::IndexHeader::decode(data);
    let _ = rocketlog_store::index::IndexEntry::decode(data);
});
