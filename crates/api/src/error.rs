//! The Azure-shaped error every 4xx/5xx answer carries.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One error as the API renders it: `{"error":{"code","message","target","details":[]}}` plus the
/// HTTP status and the `x-ms-error-code` header (equal to `code`).
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    #[serde(skip)]
    pub status: u16,
    pub code: String,
    pub message: String,
    pub target: Option<String>,
    #[serde(default)]
    #[schema(no_recursion)]
    pub details: Vec<ApiError>,
}

/// The body of an error answer.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[schema(example = json!({"error":{"code":"ResourceNotFound","message":"The Resource 'Microsoft.App/sessionPools/p1' was not found.","target":null,"details":[]}}))]
pub struct ErrorBody {
    pub error: ApiError,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.status, self.message)
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    pub fn new(status: u16, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
            target: None,
            details: Vec::new(),
        }
    }

    pub fn with_target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    pub fn with_details(mut self, details: Vec<ApiError>) -> Self {
        self.details = details;
        self
    }

    /// The JSON body of this error.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: self.clone(),
        }
    }

    pub fn missing_api_version() -> Self {
        Self::new(
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )
        .with_target("api-version")
    }

    pub fn invalid_api_version(value: &str) -> Self {
        Self::new(
            400,
            "InvalidApiVersionParameter",
            format!(
                "The api-version '{value}' is invalid. The supported forms are 'YYYY-MM-DD' and 'YYYY-MM-DD-preview'."
            ),
        )
        .with_target("api-version")
    }

    pub fn invalid_request_content(message: impl Into<String>) -> Self {
        Self::new(400, "InvalidRequestContent", message)
    }

    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", message)
    }

    pub fn invalid_resource_name(kind: &str, name: &str, rule: &str) -> Self {
        Self::new(
            400,
            "InvalidResourceName",
            format!("The {kind} name '{name}' is invalid: {rule}"),
        )
        .with_target("name")
    }

    pub fn invalid_resource_group_name(name: &str, rule: &str) -> Self {
        Self::new(
            400,
            "InvalidResourceGroupName",
            format!("The resource group name '{name}' is invalid: {rule}"),
        )
        .with_target("resourceGroupName")
    }

    pub fn invalid_subscription_id(value: &str) -> Self {
        Self::new(
            400,
            "InvalidSubscriptionId",
            format!("The subscription identifier '{value}' is not a valid UUID."),
        )
        .with_target("subscriptionId")
    }

    pub fn invalid_parameter(target: &str, message: impl Into<String>) -> Self {
        Self::new(400, "InvalidParameter", message).with_target(target)
    }

    pub fn invalid_session_identifier(message: impl Into<String>) -> Self {
        Self::new(400, "InvalidSessionIdentifier", message).with_target("identifier")
    }

    pub fn location_required() -> Self {
        Self::new(
            400,
            "LocationRequired",
            "The location property is required for this definition.",
        )
        .with_target("location")
    }

    pub fn unsupported_pool_management_type(value: &str) -> Self {
        Self::new(
            400,
            "UnsupportedPoolManagementType",
            format!("poolManagementType '{value}' is not supported: only 'Dynamic' session pools are supported."),
        )
        .with_target("properties.poolManagementType")
    }

    pub fn unsupported_container_type(value: &str) -> Self {
        Self::new(
            400,
            "UnsupportedContainerType",
            format!("containerType '{value}' is not supported: the supported container type is 'Shell'."),
        )
        .with_target("properties.containerType")
    }

    pub fn resource_not_found(resource_type: &str, name: &str) -> Self {
        Self::new(
            404,
            "ResourceNotFound",
            format!("The Resource '{resource_type}/{name}' was not found."),
        )
    }

    pub fn resource_group_not_found(name: &str) -> Self {
        Self::new(
            404,
            "ResourceGroupNotFound",
            format!("Resource group '{name}' could not be found."),
        )
    }

    pub fn path_not_found(path: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("No route matches the path '{path}'."),
        )
    }

    pub fn method_not_allowed(method: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("The method '{method}' is not allowed on this resource."),
        )
    }

    pub fn payload_too_large(limit: u64) -> Self {
        Self::new(
            413,
            "PayloadTooLarge",
            format!("The request body is larger than the limit of {limit} bytes."),
        )
    }

    pub fn conflict(code: &str, message: impl Into<String>) -> Self {
        Self::new(409, code, message)
    }

    pub fn not_implemented(what: &str) -> Self {
        Self::new(
            501,
            "NotImplemented",
            format!("{what} is not implemented in this release."),
        )
    }

    pub fn internal() -> Self {
        Self::new(
            500,
            "InternalServerError",
            "The server encountered an internal error.",
        )
    }

    pub fn service_unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }
}
