use itsm_integration_tests::reqwest::{Method, StatusCode};
use itsm_integration_tests::serde_json::json;
use itsm_integration_tests::{expect_problem, on_both_backends, read, TestApp};

async fn token_issue_and_me(app: TestApp) {
    let response = app.admin(Method::GET, "/api/v1/me").send().await.unwrap();
    let (status, me) = read(response).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["username"], "admin");
    assert_eq!(me["roles"], json!(["admin"]));
}

async fn wrong_password_is_401(app: TestApp) {
    let response = app
        .anonymous(Method::POST, "/api/v1/auth/token")
        .json(&json!({"username": "admin", "password": "wrong-password-123"}))
        .send()
        .await
        .unwrap();
    expect_problem(response, StatusCode::UNAUTHORIZED).await;
}

on_both_backends!(token_issue_and_me, wrong_password_is_401);
