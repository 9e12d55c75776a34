//! Cache-model bytes (as the store and the shared tier hold them), read by a
//! model with references: any bytes decode without panicking; what decodes
//! re-encodes to bytes that decode to the same object.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};
use ultracache::__private::fuzzing::model_decode;
use ultracache::{CacheModel, Reference};

#[derive(CacheModel, Serialize, Deserialize)]
struct Team {
    #[cache(key)]
    name: String,
    city: String,
}

#[derive(CacheModel, Serialize, Deserialize)]
struct Player {
    #[cache(key)]
    id: u32,
    team: Reference<Team>,
    mentor: Option<Reference<Player>>,
    squad: Vec<Reference<Player>>,
    nick: String,
}

fuzz_target!(|bytes: &[u8]| {
    if let Some((player, references)) = model_decode::<Player>(bytes) {
        assert_eq!(
            references,
            1 + usize::from(player.mentor.is_some()) + player.squad.len()
        );
        let once = postcard::to_stdvec(&player).expect("re-encodes");
        let (again, _) = model_decode::<Player>(&once).expect("its own bytes decode");
        assert_eq!(postcard::to_stdvec(&again).expect("re-encodes"), once);
    }
});
