//! One minute of the soak (`cargo xtask soak` runs it for an hour against a release host):
//! the real binary, 100 tenants of all three adapters, webhooks, a hot deploy and a rollback.
//! Its figures are printed, not asserted; a failed call fails it.

use crate::host_bin;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minute_of_the_soak_fails_no_call() {
    let data = crm_tests::TempDir::new("soak");
    let options = crm_tests::soak::SoakOptions {
        host_bin: host_bin(),
        plugins: crm_tests::plugins_dir(),
        data_dir: data.path().join("data"),
        minutes: 1,
        rate: 20,
    };
    let report = crm_tests::soak::run(options).await.expect("the soak runs");
    eprintln!("{}", report.table());
    assert_eq!(report.failed(), 0, "{:?}", report.failures);
    assert!(report.minutes[0].calls > 600, "{} calls in the minute", report.minutes[0].calls);
}
