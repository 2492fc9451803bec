//! A Plando emulator for manual use: `cargo run -p crm-tests --bin plando-emulator -- [TOKEN]`.
//! Prints its address; seeded with two contacts for phone 972501234567.

use crm_tests::plando;
use serde_json::json;

#[tokio::main]
async fn main() {
    let token = std::env::args().nth(1).unwrap_or_else(|| "demo-token".into());
    let crm = plando::start(&token).await;
    crm.with_state(|s| {
        s.add_contact(json!({"id": "501", "first_name": "Dana", "last_name": "Levi", "phone": "972501234567",
                             "email": "dana@example.com", "category_1": "gold", "category_2": "active"}));
        s.add_contact(json!({"id": "502", "first_name": "Dan", "last_name": "Levi", "phone": "972501234567",
                             "category_1": "silver"}));
    });
    println!("plando emulator (access_key {token}) listening on {}", crm.url);
    let _ = tokio::signal::ctrl_c().await;
}
