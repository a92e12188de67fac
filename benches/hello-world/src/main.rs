//! The hello-world Lambda function `scripts/bench.sh` measures the functions against: the
//! `lambda_runtime` example, answering every event with `{}`.

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::{Value, json};

async fn answer(_: LambdaEvent<Value>) -> Result<Value, lambda_runtime::Error> {
    Ok(json!({}))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::run(service_fn(answer)).await
}
