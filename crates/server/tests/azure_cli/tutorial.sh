#!/usr/bin/env bash
# The seed tutorial's `az` steps, then `az aks command invoke` and `az rest`, with the real Azure
# CLI against a sandpool server. Run by tests/azure_cli.rs, which sets:
#   AZ                   the az executable (from the test venv)
#   SANDPOOL_ENDPOINT    https://127.0.0.1:PORT of a --tls-self-signed server
#   REQUESTS_CA_BUNDLE   that server's certificate
#   AZURE_CONFIG_DIR     an empty directory of this run's own
#   CLIENT_ID CLIENT_SECRET TENANT_ID   a service principal to sign in with
# Prints "ok" last when every step gave what it should.
set -euo pipefail
az() { "$AZ" "$@" --only-show-errors; }
fail() { echo "FAILED: $*" >&2; exit 1; }
expect() { # expect <what> <actual> <expected>
  [ "$2" = "$3" ] || fail "$1: got '$2', expected '$3'"
}

az cloud register -n sandpool --endpoint-resource-manager "$SANDPOOL_ENDPOINT/" >/dev/null
az cloud set -n sandpool >/dev/null
az config set core.instance_discovery=false >/dev/null 2>&1
az login --service-principal -u "$CLIENT_ID" -p "$CLIENT_SECRET" --tenant "$TENANT_ID" >/dev/null

SUBSCRIPTION_ID=$(az account show --query id --output tsv)
expect "account show" "$SUBSCRIPTION_ID" 00000000-0000-0000-0000-000000000000
expect "account tenant" "$(az account show --query tenantId -o tsv)" "$TENANT_ID"
az account list --query "[].id" -o tsv | grep -qx "$SUBSCRIPTION_ID" || fail "account list"
az account set -s "$SUBSCRIPTION_ID"
expect "management token" "$(az account get-access-token --query tokenType -o tsv)" Bearer
ACCESS_TOKEN=$(az account get-access-token --resource https://dynamicsessions.io --query accessToken --output tsv)
[ -n "$ACCESS_TOKEN" ] || fail "no dynamic sessions token"

az provider register --namespace Microsoft.App --wait
expect "provider" "$(az provider show -n Microsoft.App --query registrationState -o tsv)" Registered

RESOURCE_GROUP=az-rg
LOCATION=westeurope
SESSION_POOL_NAME=myshellpool
expect "group create" "$(az group create --name $RESOURCE_GROUP --location $LOCATION --query properties.provisioningState -o tsv)" Succeeded
expect "group show" "$(az group show -n $RESOURCE_GROUP --query name -o tsv)" $RESOURCE_GROUP

# The tutorial's template, comment and all (ARM's reader tolerates it; the CLI splices the file
# into the request body unquoted, as `template:{…}`).
cat > deploy.json <<'JSON'
{
"$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
"contentVersion": "1.0.0.0",
"resources": [
{
"apiVersion": "2025-02-02-preview",
"name": "myshellpool",
"type": "Microsoft.App/sessionpools",
"location": "North Central US",
"properties": {
"poolManagementType": "Dynamic",
"containerType": "Shell", # Set the "containerType" property to "Shell"
"scaleConfiguration": {
"maxConcurrentSessions": 5
},
"dynamicPoolConfiguration": {
"lifecycleConfiguration": {
"lifecycleType": "Timed",
"cooldownPeriodInSeconds": 300
}
},
"sessionNetworkConfiguration": {
"status": "EgressDisabled"
}
}
}
]
}
JSON
expect "deployment" "$(az deployment group create --resource-group $RESOURCE_GROUP --template-file deploy.json --query properties.provisioningState -o tsv)" Succeeded

UAMI_NAME=${SESSION_POOL_NAME}-uami
POOL_ID="/subscriptions/$SUBSCRIPTION_ID/resourceGroups/$RESOURCE_GROUP/providers/Microsoft.App/sessionpools/$SESSION_POOL_NAME"
az identity create --resource-group $RESOURCE_GROUP --name $UAMI_NAME --location $LOCATION >/dev/null
UAMI_PRINCIPAL=$(az identity show --resource-group $RESOURCE_GROUP --name $UAMI_NAME --query principalId -o tsv)
[ -n "$UAMI_PRINCIPAL" ] || fail "identity has no principalId"
expect "role assignment" "$(az role assignment create --assignee-object-id "$UAMI_PRINCIPAL" --assignee-principal-type ServicePrincipal --role "Azure ContainerApps Session Executor" --scope "$POOL_ID" --query "properties.principalId || principalId" -o tsv)" "$UAMI_PRINCIPAL"

SHOWN=$(az resource show --ids "$POOL_ID" --query '{name:name, location:location, provisioningState:properties.provisioningState}' -o tsv)
expect "resource show" "$SHOWN" "$(printf 'myshellpool\tnorthcentralus\tSucceeded')"

# A session of the pool over `az rest`, with the dynamic sessions token az gets itself.
EP=$(az resource show --ids "$POOL_ID" --query properties.poolManagementEndpoint -o tsv)
OUT=$(az rest --method post --resource https://dynamicsessions.io \
  --url "$EP/executions?api-version=2025-02-02-preview&identifier=az-session" \
  --body '{"shellCommand":"echo hello from $((6*7))"}' --query result.stdout -o tsv)
expect "az rest execution" "$OUT" "hello from 42"

# AKS Run Command on a cluster, synchronously with a file, then --no-wait and `command result`.
CLUSTER_ID="/subscriptions/$SUBSCRIPTION_ID/resourceGroups/$RESOURCE_GROUP/providers/Microsoft.ContainerService/managedClusters/az-cluster"
az rest --method put --url "$CLUSTER_ID?api-version=2024-05-01" --body '{"location":"westeurope","properties":{}}' >/dev/null
mkdir ctx && echo "from the context" > ctx/note.txt
OUT=$(cd ctx && az aks command invoke -g $RESOURCE_GROUP -n az-cluster --command "cat note.txt; echo exit-ok" --file .)
echo "$OUT" | grep -q "with exitcode=0" || fail "aks command invoke: $OUT"
echo "$OUT" | grep -qx "from the context" || fail "aks command invoke output: $OUT"
ID=$(az aks command invoke -g $RESOURCE_GROUP -n az-cluster --command "echo later" --no-wait 2>&1 | sed -n 's/.*command id: \([0-9a-f]*\).*/\1/p')
[ -n "$ID" ] || fail "no command id from --no-wait"
for _ in $(seq 1 60); do
  OUT=$(az aks command result -g $RESOURCE_GROUP -n az-cluster -i "$ID" 2>&1 || true)
  echo "$OUT" | grep -q "exitcode=" && break
  sleep 0.5
done
echo "$OUT" | grep -qx "later" || fail "aks command result: $OUT"

# Signed in as the identity (its own config dir): its role lets it run commands in the pool's
# sessions and nothing else.
UAMI_ID="/subscriptions/$SUBSCRIPTION_ID/resourceGroups/$RESOURCE_GROUP/providers/Microsoft.ManagedIdentity/userAssignedIdentities/$UAMI_NAME"
UAMI_CLIENT=$(az identity show --ids "$UAMI_ID" --query clientId -o tsv)
UAMI_SECRET=$(az rest --method post --url "$UAMI_ID/resetClientSecret?api-version=2023-01-31" --query clientSecret -o tsv)
[ -n "$UAMI_SECRET" ] || fail "no secret from resetClientSecret"
ADMIN_CONFIG_DIR=$AZURE_CONFIG_DIR
export AZURE_CONFIG_DIR=$PWD/identity-config
az cloud register -n sandpool --endpoint-resource-manager "$SANDPOOL_ENDPOINT/" >/dev/null
az cloud set -n sandpool >/dev/null
az config set core.instance_discovery=false >/dev/null 2>&1
az login --service-principal -u "$UAMI_CLIENT" -p "$UAMI_SECRET" --tenant "$TENANT_ID" --allow-no-subscriptions >/dev/null
OUT=$(az rest --method post --resource https://dynamicsessions.io \
  --url "$EP/executions?api-version=2025-02-02-preview&identifier=uami-session" \
  --body '{"shellCommand":"id -u"}' --query result.stdout -o tsv)
expect "identity's execution" "$OUT" 0
if ERR=$(az group create -n not-allowed -l $LOCATION 2>&1); then fail "the identity created a group"; fi
echo "$ERR" | grep -q AuthorizationFailed || fail "identity's group create: $ERR"
export AZURE_CONFIG_DIR=$ADMIN_CONFIG_DIR

az group delete --resource-group $RESOURCE_GROUP --yes
if az group show -n $RESOURCE_GROUP >/dev/null 2>&1; then fail "group still there"; fi
echo ok
